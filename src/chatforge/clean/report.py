"""The cleaning report: `report/summary.json`, a markdown table (`report/steps.md`) and a bar chart
(`report/steps.png`) of the documents each step saw, kept and dropped (by reason), with examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def step_rows(counts: dict[str, dict[str, Any]], order: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    for step in [s for s in order if s in counts] + sorted(set(counts) - set(order)):
        c = counts[step]
        dropped = sum(c["dropped"].values())
        rows.append({"step": step, "seen": c["seen"], "kept": c["kept"], "dropped": dropped,
                     "reasons": dict(sorted(c["dropped"].items(), key=lambda kv: -kv[1]))})
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| step | seen | kept | dropped | reasons |", "|---|---:|---:|---:|---|"]
    for row in rows:
        reasons = ", ".join(f"{r} {n}" for r, n in row["reasons"].items()) or "-"
        lines.append(f"| {row['step']} | {row['seen']} | {row['kept']} | {row['dropped']} | {reasons} |")
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(steps)), 4))
    ax.bar(steps, [r["kept"] for r in rows], label="kept", color="#4c9a5f")
    ax.bar(steps, [r["dropped"] for r in rows], bottom=[r["kept"] for r in rows], label="dropped", color="#c8553d")
    for i, row in enumerate(rows):
        if row["dropped"]:
            ax.text(i, row["kept"] + row["dropped"], str(row["dropped"]), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("documents")
    ax.set_title("chatforge clean: kept and dropped per step")
    ax.legend()
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report_dir: Path, summary: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n")
    (report_dir / "steps.md").write_text(markdown_table(rows))
    bar_chart(rows, report_dir / "steps.png")
