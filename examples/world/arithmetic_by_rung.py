"""The held-out arithmetic instructions with `task_type` set to each problem's rung, for per-rung exact match.

    python examples/world/arithmetic_by_rung.py runs/world/data/instructions/test.jsonl runs/w17/arith_eval.jsonl

`chatforge sft ... eval.path=OUT` then prints exact match per rung (rung1 ... rung4) instead of one
arithmetic row (docs/world.md, "Measured so far").
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from chatforge.world import spec_from_prompt
from chatforge.world.tasks import arithmetic_rung


def main(source: str, out: str) -> None:
    counts: Counter[str] = Counter()
    with open(source, encoding="utf-8") as fh, open(out, "w", encoding="utf-8") as sink:
        for line in fh:
            record = json.loads(line)
            if record["task"] != "arithmetic":
                continue
            spec = spec_from_prompt(record["messages"][:2])
            record["task_type"] = f"rung{arithmetic_rung(spec.a, spec.op, spec.b)}"
            counts[record["task_type"]] += 1
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(dict(sorted(counts.items())))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
