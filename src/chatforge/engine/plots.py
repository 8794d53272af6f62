"""A run's report plots from metrics.jsonl, as PNG: loss, learning rate, and every other logged metric.

- `loss.png`: train loss (and `val/loss`). The y label names the loss's unit, which depends on what
  the objective counts (`StepOutput.count`): tokens for language modelling and SFT (nats/token),
  pairs for DPO, pairs or ranking groups for a reward model. The unit is read off the metrics the
  objective logs (`loss_unit`), so the engine needs no extra argument.
- `lr.png`: the learning rate.
- `metrics.png`: one small panel per other metric the objective logged (DPO's reward margin and
  accuracy, a reward model's accuracy, per-source losses, ...), with its `val/` counterpart when
  evaluated. Throughput and bookkeeping keys (`tokens`, `tokens_per_s`, `mfu`, `lr`) are left out.
- `best_of_n.png` (`plot_best_of_n`): the Best-of-N curves against N and KL.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# Keys that are not a property of the model being trained (or are plotted elsewhere).
_BOOKKEEPING = {"step", "loss", "lr", "tokens", "tokens_per_s", "mfu", "epoch", "elapsed_s", "time"}
_MAX_PANELS = 12


def loss_unit(rows: list[dict[str, Any]]) -> str:
    """What one unit of the logged loss is averaged over, from the metrics the objective logs."""
    keys = set().union(*rows) if rows else set()
    if "rewards/accuracy" in keys:  # DPO family: the mean over preference pairs
        return "mean per pair"
    if "accuracy" in keys and "rewards/margin" in keys:  # reward model: pairs (bt) or ranking groups (kwise)
        return "mean per pair or ranking"
    if any(k.startswith("loss/policy") for k in keys):  # policy-gradient stages: a sum of several terms
        return "policy + value + KL terms"
    return "nats/token"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _finite_series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [
        (r["step"], float(r[key])) for r in rows
        if "step" in r and isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool) and math.isfinite(r[key])
    ]
    return [s for s, _ in points], [v for _, v in points]


def plot_training_curves(rows: list[dict[str, Any]], out_dir: Path, title: str) -> list[Path]:
    plt = _plt()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "val/loss" in r]
    if train:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(*_finite_series(train, "loss"), label="train loss", lw=1)
        if evals:
            ax.plot(*_finite_series(evals, "val/loss"), "o-", label="val loss", ms=3)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(f"loss ({loss_unit(rows)})")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(_save(fig, out_dir / "loss.png"))
    lr_rows = [r for r in rows if "lr" in r]
    if lr_rows:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot(*_finite_series(lr_rows, "lr"))
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("learning rate")
        ax.set_title(f"{title}: learning rate")
        ax.grid(alpha=0.3)
        written.append(_save(fig, out_dir / "lr.png"))
    names = metric_names(rows)
    if names:
        written.append(_plot_metrics(rows, names, out_dir / "metrics.png", title))
    return written


def metric_names(rows: list[dict[str, Any]]) -> list[str]:
    """The metrics to give a panel: logged numbers other than loss, lr and bookkeeping, first-seen order.

    A `val/x` key shares the panel of `x` when the train rows log `x`; otherwise it gets its own.
    """
    seen: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if key in _BOOKKEEPING or key == "val/loss" or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            seen.setdefault(key, None)
    train_keys = [k for k in seen if not k.startswith("val/")]
    val_only = [k for k in seen if k.startswith("val/") and k.removeprefix("val/") not in seen]
    return (train_keys + val_only)[:_MAX_PANELS]


def _plot_metrics(rows: list[dict[str, Any]], names: list[str], path: Path, title: str) -> Path:
    plt = _plt()
    cols = min(3, len(names))
    nrows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 2.8 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        ax.plot(*_finite_series(rows, name), lw=1, label="train" if not name.startswith("val/") else "val")
        if not name.startswith("val/") and any(f"val/{name}" in r for r in rows):
            ax.plot(*_finite_series(rows, f"val/{name}"), "o-", ms=3, label="val")
            ax.legend(fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("optimizer step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"{title}: logged metrics", fontsize=10)
    return _save(fig, path)


def best_of_n_lines(rows: list[dict[str, Any]], proxy: str, gold: str) -> list[tuple[str, list[float], str]]:
    """(label, values, style) of each curve: gold, proxy unless it is the gold reward itself, accuracy."""
    same = proxy == gold and all(r["proxy"] == r["gold"] for r in rows)
    lines = [(f"gold reward ({gold}{'; also the proxy' if same else ''})", [r["gold"] for r in rows], "o-")]
    if not same:
        lines.append((f"proxy reward ({proxy})", [r["proxy"] for r in rows], "s--"))
    if all(r["accuracy"] is not None for r in rows):
        lines.append(("accuracy", [r["accuracy"] for r in rows], "^:"))
    return lines


def plot_best_of_n(rows: list[dict[str, Any]], path: Path, proxy: str, gold: str, title: str) -> Path:
    """Gold and proxy reward (and accuracy) of the best of N against N, with the KL on the top axis.

    When the proxy is the gold reward itself the two curves are one: it is drawn once, labelled so
    (drawing both would hide the gold line under the dashed proxy line).
    """
    import matplotlib

    plt = _plt()
    ns = [r["n"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, values, style in best_of_n_lines(rows, proxy, gold):
        ax.plot(ns, values, style, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("N (best of N)")
    ax.set_ylabel("mean over prompts")
    top = ax.secondary_xaxis("top")  # same positions, labelled with the analytic KL
    top.set_xticks(ns, [f"{r['kl']:.2f}" for r in rows])
    top.set_xlabel("KL(best-of-N || base), nats")
    for axis in (ax.xaxis, top.xaxis):
        axis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path)
