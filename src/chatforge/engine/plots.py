"""Loss and learning-rate curves from metrics.jsonl, as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_training_curves(rows: list[dict[str, Any]], out_dir: Path, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "val/loss" in r]
    if train:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1)
        if evals:
            ax.plot([r["step"] for r in evals], [r["val/loss"] for r in evals], "o-", label="val loss", ms=3)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (nats/token)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / "loss.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    lr_rows = [r for r in rows if "lr" in r]
    if lr_rows:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot([r["step"] for r in lr_rows], [r["lr"] for r in lr_rows])
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("learning rate")
        ax.set_title(f"{title}: learning rate")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / "lr.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
