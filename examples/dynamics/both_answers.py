"""SFT conversations from preference pairs, one per answer: prompt + chosen AND prompt + rejected.

The mitigation of the squeezing effect proposed in "Learning Dynamics of LLM Finetuning"
(Ren & Sutherland, arXiv:2407.10490, §4.3): before DPO, fine-tune on both responses of each pair,
so the rejected answers are no longer in a low-probability valley when DPO's negative gradient
pushes them down (docs/dynamics.md). `--chosen-only` writes the matching control (chosen answers only).

    python examples/dynamics/both_answers.py runs/continual/world/preferences/pairs_train.jsonl \
        runs/dynamics/sft_both.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def conversations(pair: dict, chosen_only: bool = False) -> list[dict]:
    """OpenAI-`messages` records of one task-world pair (`prompt` messages, `chosen`, `rejected`)."""
    answers = ["chosen"] if chosen_only else ["chosen", "rejected"]
    return [
        {"messages": [*pair["prompt"], {"role": "assistant", "content": pair[side]}], "id": f"{pair.get('id', '')}:{side}"}
        for side in answers
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", type=Path, help="preference pairs (JSONL with prompt messages, chosen, rejected)")
    parser.add_argument("out", type=Path, help="SFT conversations to write (JSONL, OpenAI messages)")
    parser.add_argument("--chosen-only", action="store_true", help="the control: chosen answers only")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.pairs.read_text(encoding="utf-8").splitlines() if line.strip()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        for pair in rows:
            for record in conversations(pair, args.chosen_only):
                fh.write(json.dumps(record) + "\n")
    print(f"{args.out}: {len(rows) * (1 if args.chosen_only else 2)} conversations from {len(rows)} pairs")


if __name__ == "__main__":
    main()
