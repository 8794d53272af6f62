"""Print the continued-pretraining table (markdown) from the run summaries of run_all.sh.

    python examples/continual/table.py runs/continual
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = [
    ("a", "1. pretrain on A", None),
    ("b_continue", "2. continue on B, re-warm", "a"),
    ("b_continue_replay", "2. continue on B, re-warm, 5% replay of A", "a"),
    ("b_continue_norewarm", "2. continue on B, constant final LR", "a"),
    ("b_continue_replay_norewarm", "2. continue on B, constant final LR, 5% replay", "a"),
    ("ab_retrain", "3. retrain from scratch on A u B", None),
]


def main(root: Path) -> None:
    summaries = {}
    for name, _, _ in ROWS:
        path = root / name / "report" / "summary.json"
        if path.is_file():
            summaries[name] = json.loads(path.read_text())
    print(
        "| regime | steps | compute (PFLOP) | world A bpb | world A knowledge | world B bpb | world B knowledge "
        "| general bpb |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, label, base in ROWS:
        if name not in summaries:
            continue
        s = summaries[name]
        flops = s["train_flops"] + (summaries[base]["train_flops"] if base in summaries else 0)
        steps = s["steps"] + (summaries[base]["steps"] if base in summaries else 0)
        cells = [
            _cell(s["domains"], domain, key, with_delta=base is not None)
            for domain, key in [("world_a", "bpb"), ("world_a", "knowledge_acc"), ("world_b", "bpb"),
                                ("world_b", "knowledge_acc"), ("general", "bpb")]
        ]
        print(f"| {label} | {steps} | {flops / 1e15:.2f} | " + " | ".join(cells) + " |")


def _cell(domains: dict, domain: str, key: str, with_delta: bool) -> str:
    """`after (change from the starting model)` for continued runs, `after` for runs from scratch."""
    entry = domains.get(domain, {})
    after = entry.get("after", {}).get(key)
    if after is None:
        return "-"
    delta = entry.get("delta", {}).get(key)
    return f"{after:.3f} ({delta:+.3f})" if with_delta and delta is not None else f"{after:.3f}"


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/continual"))
