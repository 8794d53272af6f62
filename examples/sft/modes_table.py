"""The SFT training-mode comparison table from run directories' report/summary.json.

    python examples/sft/modes_table.py runs/sft/modes/{full,lora,freeze,full_then_lora}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def row(run: Path) -> str:
    s = json.loads((run / "report" / "summary.json").read_text())
    em = (s.get("exact_match") or {}).get("sft") or {}
    by_type = em.get("per_task", {})
    mem = s["peak_memory"]
    growth = (mem["peak_bytes"] - mem["start_bytes"]) / 2**20
    segments = " + ".join(
        f"{seg['mode']} {seg['steps'][1] - seg['steps'][0]} steps {seg['tokens_per_s']:,.0f} tok/s" for seg in s["segments"]
    )
    cells = [
        s["mode"],
        f"{s['trainable_parameters']:,} ({100 * s['trainable_parameters'] / s['parameters']:.1f}%)",
        f"{em.get('accuracy', float('nan')):.3f}",
        " / ".join(f"{by_type[t]['accuracy']:.2f}" for t in sorted(by_type)),
        f"{s['final_train_loss']:.3f}",
        segments,
        f"{mem['peak_bytes'] / 2**20:,.0f} MiB (+{growth:,.0f})",
    ]
    return "| " + " | ".join(cells) + " |"


def main(runs: list[str]) -> None:
    first = json.loads((Path(runs[0]) / "report" / "summary.json").read_text())
    types = sorted(((first.get("exact_match") or {}).get("sft") or {}).get("per_task", {}))
    print(
        "| mode | trainable parameters | exact match | by type (" + ", ".join(types) + ") | final train loss "
        "| tokens/s (median of steps) | peak RSS (growth in training) |"
    )
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        print(row(Path(run)))


if __name__ == "__main__":
    main(sys.argv[1:])
