"""Print the continued-pretraining table (markdown) from the run summaries of run_all.sh, and plot
the old- and new-domain held-out loss over the continued runs (the forgetting curves).

    python examples/continual/table.py runs/continual [curves.png]
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
        "| regime | steps (total) | compute (PFLOP, total) | world A bpb | world A knowledge | world B bpb | world B knowledge "
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


def plot_curves(root: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for name, label, _ in ROWS:
        path = root / name / "metrics.jsonl"
        if not path.is_file() or not name.startswith("b_"):
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for ax, key in zip(axes, ("world_a_heldout", "world_b_heldout")):
            points = [(r["step"], r[f"val/{key}/loss"]) for r in rows if f"val/{key}/loss" in r]
            ax.plot(*zip(*points), "o-", ms=3, label=label.removeprefix("2. continue on B, "))
    for ax, title in zip(axes, ("old domain: world A held-out", "new domain: world B held-out")):
        ax.set_title(title)
        ax.set_xlabel("step of continued pretraining")
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/continual")
    main(root)
    if len(sys.argv) > 2:
        plot_curves(root, Path(sys.argv[2]))
