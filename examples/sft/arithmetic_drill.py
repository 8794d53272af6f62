"""Write N extra arithmetic instruction records from the task world (chatforge.world.arithmetic_drill),
keeping out every problem of the world's instruction and verifiable files, for examples/sft/world_arithmetic.yaml.

    python examples/sft/arithmetic_drill.py --world runs/continual/world --count 20000 --out runs/sft/arithmetic_drill.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from chatforge.world.arithmetic_drill import drill_records, world_problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True, help="a written world directory (chatforge world write)")
    parser.add_argument("--count", type=int, default=20000, help="records to write")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the draw")
    parser.add_argument("--brief", action="store_true", help="show working only where the prompt asks for it")
    parser.add_argument("--out", required=True, help="JSONL file to write (messages layout)")
    args = parser.parse_args()
    exclude = world_problems(args.world)
    records = drill_records(args.seed, args.count, exclude, always_worked=not args.brief)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    print(f"wrote {len(records)} arithmetic records to {out} ({len(exclude)} world problems kept out)")


if __name__ == "__main__":
    main()
