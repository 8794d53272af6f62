"""An evaluation suite: several models × several tasks, one side-by-side table, everything in eval.json.

    models: [runs/continual/a/final, runs/continual/b_continue/final]
    baseline: runs/continual/a/final          # deltas of every other model against this one (forgetting)
    tasks:
      - {kind: lm, data: [{path: data/world/pretrain/world_a_valid.jsonl}]}
      - {kind: multiple_choice, path: data/world/ceval, method: option, shots: 3}
      - {kind: generation, path: data/world/verifiable/test.jsonl, n: 8, ks: [1, 4, 8]}
      - {kind: reward_accuracy, path: data/world/preferences/pairs_test.jsonl, model_kind: dpo, reference: runs/sft/final}
      - {kind: judge, path: prompts.jsonl, judge: {base_url: http://127.0.0.1:8000/v1}}

Each model is loaded once and runs every task, then is released before the next. The table has one
row per task/metric and one column per model, plus a `Δ label` column per model against `baseline`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from pydantic import Field, model_validator

from chatforge.config.base import StrictModel
from chatforge.errors import ConfigError
from chatforge.evaluation.tasks import TASKS, ModelContext, TaskConfig
from chatforge.run_dir import RejectLog


class SuiteConfig(StrictModel):
    models: list[str] = Field(min_length=1, description="model directories evaluated side by side")
    labels: list[str] | None = Field(None, description="column names, one per model (default: the paths' last two parts)")
    baseline: str | None = Field(None, description="a model (path or label) every other one is compared with: delta columns")
    tokenizer: str | None = Field(None, description="tokenizer directory for every model (default: each model's own)")
    tasks: list[TaskConfig] = Field(min_length=1, description="the tasks, each with a `kind`: lm, multiple_choice, generation, reward_accuracy, judge")
    out: str = Field("eval.json", description="results file; the reject log and plot are written next to it")
    plot: bool = Field(True, description="also write <out>.png: a bar chart of the bounded metrics per task")
    device: str = Field("auto", description="auto, cpu, cuda")
    seed: int = Field(0, description="torch seed before each model's tasks")

    @model_validator(mode="after")
    def _check(self) -> SuiteConfig:
        if self.labels is not None and len(self.labels) != len(self.models):
            raise ValueError(f"labels: {len(self.labels)} labels for {len(self.models)} models")
        labels = self.model_labels()
        if len(set(labels)) != len(labels):
            raise ValueError(f"models: two models share a label ({', '.join(labels)}); set `labels`")
        if self.baseline is not None and self.baseline not in labels and self.baseline not in self.models:
            raise ValueError(f"baseline {self.baseline!r} is not one of the models ({', '.join(labels)})")
        names = self.task_names()
        if len(set(names)) != len(names):
            raise ValueError(f"tasks: two tasks share a name ({', '.join(names)}); set `name`")
        return self

    def check_tasks(self) -> None:
        """Every task's own rules (`TaskBase.check`), before any model loads: ConfigError `tasks[I].FIELD: ...`."""
        for i, task in enumerate(self.tasks):
            try:
                task.check()
            except ConfigError as exc:
                raise ConfigError(f"tasks[{i}].{exc}") from None

    def model_labels(self) -> list[str]:
        if self.labels is not None:
            return list(self.labels)
        return ["/".join(Path(m).parts[-2:]) for m in self.models]

    def baseline_label(self) -> str | None:
        if self.baseline is None:
            return None
        labels = self.model_labels()
        return self.baseline if self.baseline in labels else labels[self.models.index(self.baseline)]

    def task_names(self) -> list[str]:
        counts: dict[str, int] = {}
        names = []
        for task in self.tasks:
            if not task.name:
                counts[task.kind] = counts.get(task.kind, 0) + 1
        seen: dict[str, int] = {}
        for task in self.tasks:
            if task.name:
                names.append(task.name)
                continue
            seen[task.kind] = seen.get(task.kind, 0) + 1
            names.append(task.kind if counts[task.kind] == 1 else f"{task.kind}{seen[task.kind]}")
        return names


def run_suite(cfg: SuiteConfig, progress=print) -> dict:
    """Run every task on every model; write eval.json (and the plot); return the results."""
    import torch
    from tqdm import tqdm

    from chatforge.engine.distributed import init

    cfg.check_tasks()
    _, device = init(cfg.device)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    labels, names = cfg.model_labels(), cfg.task_names()
    results: dict[str, dict] = {}
    # one tick per (model, task); on a terminal only, so logs and captured output stay clean
    bar = tqdm(total=len(cfg.models) * len(cfg.tasks), desc="eval", unit="task", file=sys.stderr,
               disable=not sys.stderr.isatty(), dynamic_ncols=True, leave=False,
               mininterval=0)  # a few slow ticks: draw each one (tqdm's 0.1 s throttle hid the last)
    with bar, RejectLog(out.with_suffix(".rejected.jsonl")) as rejects:
        for path, label in zip(cfg.models, labels):
            if not Path(path).is_dir():
                raise ConfigError(f"models: model directory not found: {path}")
            ctx = ModelContext(path=path, device=str(device), rejects=rejects, tokenizer_path=cfg.tokenizer)
            results[label] = {}
            for name, task in zip(names, cfg.tasks):
                torch.manual_seed(cfg.seed)
                bar.set_description(f"eval [{label}] {name}")
                start = time.perf_counter()
                outcome = TASKS[task.kind][1](ctx, task)
                outcome["seconds"] = round(time.perf_counter() - start, 2)
                bar.update(1)
                results[label][name] = outcome
                shown = ", ".join(f"{k}={v:.4g}" for k, v in list(outcome["metrics"].items())[:4])
                progress(f"[{label}] {name}: {shown} ({outcome['seconds']:.1f} s)")
            ctx.release()
        rejected = dict(rejects.counts)
        if rejects.total:
            progress(rejects.summary_line())
    report = {
        "models": dict(zip(labels, cfg.models)),
        "baseline": cfg.baseline_label(),
        "tasks": {name: task.model_dump() for name, task in zip(names, cfg.tasks)},
        "results": results,
        "deltas": deltas(results, cfg.baseline_label()),
        "rejected": rejected,
    }
    out.write_text(json.dumps(report, indent=2, default=_json_default, allow_nan=True) + "\n", encoding="utf-8")
    if cfg.plot:
        plot_results(report, out.with_suffix(".png"))
    return report


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def deltas(results: dict[str, dict], baseline: str | None) -> dict[str, dict]:
    """{label: {task: {metric: value - baseline's}}} for every model but the baseline."""
    if baseline is None:
        return {}
    base = results[baseline]
    out: dict[str, dict] = {}
    for label, tasks in results.items():
        if label == baseline:
            continue
        out[label] = {
            name: {k: v - base[name]["metrics"][k] for k, v in r["metrics"].items() if k in base[name]["metrics"]}
            for name, r in tasks.items()
        }
    return out


def table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the side-by-side table: task/metric, one column per model, Δ per non-baseline model."""
    labels = list(report["results"])
    baseline = report.get("baseline")
    others = [label for label in labels if label != baseline] if baseline else []
    header = ["task / metric", *labels, *(f"Δ {label}" for label in others)]
    rows = []
    for name in report["tasks"]:
        metrics: list[str] = []
        for label in labels:
            metrics += [k for k in report["results"][label][name]["metrics"] if k not in metrics]
        for metric in metrics:
            row = [f"{name} / {metric}"]
            row += [_fmt(report["results"][label][name]["metrics"].get(metric)) for label in labels]
            row += [_fmt(report["deltas"][label][name].get(metric), signed=True) for label in others]
            rows.append(row)
    return header, rows


def _fmt(value, signed: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:+d}" if signed else str(value)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def format_table(report: dict) -> str:
    header, rows = table_rows(report)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def format_markdown(report: dict) -> str:
    header, rows = table_rows(report)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def plot_results(report: dict, path: Path) -> Path | None:
    """Grouped bars (one group per task/metric in [0, 1], one bar per model); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels = list(report["results"])
    keys = []
    for name in report["tasks"]:
        for label in labels:
            for metric, value in report["results"][label][name]["metrics"].items():
                bounded = isinstance(value, float) and 0.0 <= value <= 1.0 and "/" not in metric
                if bounded and (name, metric) not in keys:
                    keys.append((name, metric))
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(keys) * max(1, len(labels)) / 2 + 2), 4))
    width = 0.8 / len(labels)
    for j, label in enumerate(labels):
        values = [report["results"][label][n]["metrics"].get(m, float("nan")) for n, m in keys]
        ax.bar([i + j * width for i in range(len(keys))], values, width, label=label)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))])
    ax.set_xticklabels([f"{n}\n{m}" for n, m in keys], fontsize=7)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("chatforge eval")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
