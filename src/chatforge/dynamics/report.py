"""dynamics.jsonl (one row per measurement), its plot, and the squeezing verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chatforge.dynamics.config import ALL_KINDS


def append_row(path: Path, step: int, row: dict[str, Any]) -> None:
    """One measurement, flushed at once (a crash keeps the rows so far)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"step": step, **row}) + "\n")


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a dynamics.jsonl in step order; a step written twice (a resumed run) keeps its last row."""
    by_step: dict[int, dict] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            by_step[int(row["step"])] = row
    return [by_step[s] for s in sorted(by_step)]


def detect_squeezing(rows: list[dict[str, Any]], drop: float = 0.5, rise: float = 0.1) -> dict[str, Any]:
    """The squeezing effect between the first and the last measurement (arXiv:2407.10490, §3.3).

    Squeezing: the mean log-probs of the chosen and of the rejected probes both fall by more than
    `drop` nats while the model's greedy answer's mean log-prob rises by more than `rise` nats, i.e.
    probability mass leaves the responses DPO is trained on for the model's own most likely answer.
    The greedy answer is re-generated at each measurement, so its delta compares the model's argmax
    answers at the two points. Deltas are reported whatever the verdict.
    """
    result: dict[str, Any] = {"squeezing": None, "thresholds": {"drop": drop, "rise": rise}}
    if len(rows) < 2:
        result["reason"] = "fewer than two measurements"
        return result
    first, last = rows[0], rows[-1]
    result["steps"] = [first["step"], last["step"]]
    deltas = {}
    for key in ("logp/chosen", "logp/rejected", "logp/greedy", "argmax_mass/chosen", "greedy/gold_reward",
                "logp_per_token/chosen", "logp_per_token/rejected", "logp_per_token/greedy"):
        if key in first and key in last:
            deltas[key] = last[key] - first[key]
    result["deltas"] = deltas
    need = ("logp/chosen", "logp/rejected", "logp/greedy")
    if any(k not in deltas for k in need):
        result["reason"] = f"needs the kinds chosen, rejected and greedy (have {sorted(deltas)})"
        return result
    c, r, g = (deltas[k] for k in need)
    result["squeezing"] = bool(c < -drop and r < -drop and g > rise)
    result["reason"] = (
        f"chosen {c:+.2f}, rejected {r:+.2f} nats (both must fall by > {drop}); greedy {g:+.2f} nats (must rise by > {rise})"
    )
    return result


_GROUPS = {  # overview panel: the kinds the squeezing verdict reads
    "chosen": "tab:green", "rejected": "tab:red", "greedy": "tab:blue",
}


def plot_dynamics(runs: str | Path | dict[str, str | Path], png: str | Path, title: str = "learning dynamics") -> Path:
    """One panel per probe kind (mean total log-prob over steps), an overview of chosen / rejected /
    greedy as the change since the first measurement, and the argmax mass along the chosen answer.
    `runs` is one dynamics.jsonl or {label: path} to overlay several runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(runs, dict):
        runs = {"": runs}
    data = {label: read_rows(path) for label, path in runs.items()}
    kinds = [k for k in ALL_KINDS if any(f"logp/{k}" in r for rows in data.values() for r in rows)]
    extra = [key for key in ("argmax_mass/chosen", "greedy/gold_reward") if any(key in r for rows in data.values() for r in rows)]
    panels = ["overview", *kinds, *extra]
    cols = 4
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.9 * nrows), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for ax, panel in zip(axes.flat, panels):
        for n, (label, rows) in enumerate(data.items()):
            style = styles[n % len(styles)]
            prefix = f"{label}: " if label else ""
            if panel == "overview":
                for kind, color in _GROUPS.items():
                    key = f"logp/{kind}"
                    pts = [(r["step"], r[key]) for r in rows if key in r]
                    if pts:
                        ax.plot([s for s, _ in pts], [v - pts[0][1] for _, v in pts], style, color=color,
                                marker="o", ms=3, label=f"{prefix}{kind}")
                ax.set_title("Δ log-prob since first measurement")
                ax.axhline(0, color="grey", lw=0.6)
            else:
                key = panel if "/" in panel else f"logp/{panel}"
                pts = [(r["step"], r[key]) for r in rows if key in r]
                if pts:
                    ax.plot([s for s, _ in pts], [v for _, v in pts], style, marker="o", ms=3, label=label or None,
                            color=f"C{n}")
                ax.set_title(panel if "/" in panel else f"{panel}: mean log-prob")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if panel == "overview" or len(data) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
