"""Print or plot a learning-rate schedule.

    chatforge schedule [CONFIG.yaml] [key=value ...] [--plot out.png] [--compare KINDS] [--print-config]

CONFIG.yaml is either this stage's own config (`schedule:`, `lr:`, `total_steps:`) or a pretrain config:
when the file has an `optim` or `train` section, its `schedule`, `optim.lr` and `train.max_steps` are
used and everything else is ignored (overrides may then be written `optim.lr=...`, `train.max_steps=...`).
Without --plot it prints the LR at ~20 evenly spaced steps and at every phase boundary; --plot PATH
draws the schedule to a PNG instead. --compare cosine,wsd,wcsd,infinite draws (or tabulates) several
kinds on the same axes, each with its default parameters except the configured `schedule`'s own kind.

Examples:
    chatforge schedule schedule.kind=wsd schedule.decay_shape=linear lr=3e-4 total_steps=5000
    chatforge schedule runs/base/config.yaml --plot lr.png
    chatforge schedule --compare cosine,wsd,wcsd,infinite lr=3e-4 total_steps=1000 --plot schedules.png
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from chatforge.cli import split_args
from chatforge.config import StrictModel
from chatforge.config.load import (
    deep_merge,
    describe_fields,
    dump_config,
    parse_overrides,
    read_yaml,
    validate_config,
)
from chatforge.engine.schedules import (
    SCHEDULE_CONFIGS,
    SCHEDULES,
    CosineSchedule,
    Phase,
    ScheduleConfig,
    lr_multiplier,
    phases,
)
from chatforge.errors import ConfigError

TABLE_ROWS = 20  # evenly spaced steps in the printed table, besides the phase boundaries
MAX_PLOT_POINTS = 20_000  # longer schedules are drawn from evenly spaced steps plus the boundaries


class Config(StrictModel):
    """What `chatforge schedule` draws: one schedule, its peak LR and its length."""

    schedule: ScheduleConfig = Field(
        default_factory=CosineSchedule, description="the schedule (see kinds below)"
    )
    lr: float = Field(3e-4, gt=0.0, description="peak learning rate")
    total_steps: int = Field(1000, ge=1, description="optimizer steps in the run")
    plot: str | None = Field(None, description="write a PNG of the schedule to this path instead of a table")
    compare: list[str] = Field(
        default_factory=list,
        description="kinds to show together (comma-separated), each with default parameters",
    )

    @field_validator("compare", mode="before")
    @classmethod
    def _split_kinds(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            unknown = [kind for kind in value if kind not in SCHEDULES]
            if unknown:
                raise ValueError(
                    f"unknown schedule kind(s) {', '.join(map(repr, unknown))}; kinds: {', '.join(SCHEDULES)}"
                )
        return value


# ------------------------------------------------------------------------------------------ command line


def main(argv: list[str]) -> int:
    path, overrides, flags = split_args(list(argv))
    if flags & {"--help", "-h"}:
        print(help_text())
        return 0
    cfg = load(path, overrides)
    if "--print-config" in flags:
        print(dump_config(cfg), end="")
        return 0
    run(cfg)
    return 0


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build the `Config` from this stage's YAML or a pretrain YAML, plus `key=value` overrides."""
    data = read_yaml(path) if path else {}
    over = _pretrain_overrides(parse_overrides(list(overrides)))
    if "optim" in data or "train" in data:
        data = _from_pretrain(data, path)
    return validate_config(
        Config, deep_merge(data, over), source=str(path) if path else None, override_keys=_dotted(over)
    )


def _from_pretrain(data: dict[str, Any], path: str | Path | None) -> dict[str, Any]:
    """Take `schedule`, `optim.lr` and `train.max_steps` from a pretrain config; ignore the rest."""
    out: dict[str, Any] = {}
    if data.get("schedule") is not None:
        out["schedule"] = data["schedule"]
    for section, key, ours in (("optim", "lr", "lr"), ("train", "max_steps", "total_steps")):
        node = data.get(section)
        if node is None:
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: {section!r} must be a mapping of keys, got {type(node).__name__}")
        if node.get(key) is not None:
            out[ours] = node[key]
    return out


def _pretrain_overrides(over: dict[str, Any]) -> dict[str, Any]:
    """Accept `optim.lr=` and `train.max_steps=` as the pretrain spellings of `lr=` and `total_steps=`."""
    over = dict(over)
    for section, key, ours in (("optim", "lr", "lr"), ("train", "max_steps", "total_steps")):
        node = over.pop(section, None)
        if node is None:
            continue
        rest = sorted(set(node) - {key}) if isinstance(node, dict) else [""]
        if rest:
            other = ", ".join(f"{section}.{k}" if k else section for k in rest)
            raise ConfigError(
                f"override {other}: the schedule reads only {section}.{key} from the {section!r} section"
            )
        over[ours] = node[key]
    return over


def _dotted(tree: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in tree.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= _dotted(value, f"{prefix}{key}.")
    return keys


def help_text() -> str:
    lines = [textwrap.dedent(__doc__ or "").strip(), "", "config keys:"]
    rows = [row for row in describe_fields(Config) if row[0] != "schedule"]
    width = 28
    lines += [f"  {key:<{width}}  {desc}  [{kind}]" for key, kind, desc in rows]
    for kind, model in SCHEDULE_CONFIGS.items():
        doc = (model.__doc__ or "").strip().splitlines()[0]
        lines += ["", f"schedule.kind={kind}: {doc}"]
        lines += [
            f"  {key:<{width}}  {desc}  [{typ}]"
            for key, typ, desc in describe_fields(model, "schedule.")
            if key != "schedule.kind"
        ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ table / plot


def run(cfg: Config) -> str | None:
    """Print the table, or write the PNG to `cfg.plot` and return its path."""
    schedules = _schedules(cfg)
    if cfg.plot:
        out = plot(schedules, cfg.lr, cfg.total_steps, cfg.plot, compare=bool(cfg.compare))
        print(f"wrote {out}")
        return str(out)
    print(table(schedules, cfg.lr, cfg.total_steps))
    return None


def _schedules(cfg: Config) -> list[Any]:
    """The configured schedule, or one per `compare` kind (the configured one for its own kind)."""
    if not cfg.compare:
        return [cfg.schedule]
    return [cfg.schedule if kind == cfg.schedule.kind else SCHEDULE_CONFIGS[kind]() for kind in cfg.compare]


def describe(schedule: Any, layout: list[Phase]) -> str:
    """`warmup [0, 10) 0 -> 1 | cosine [10, 1000) 1 -> 0.1`: the phases of one schedule."""
    parts = []
    for p in layout:
        move = f"{p.begin:g}" if p.shape == "constant" else f"{p.begin:g} -> {p.finish:g}"
        shape = "" if p.shape in ("constant", "warmup") or p.name == p.shape else f" {p.shape}"
        parts.append(f"{p.name} [{p.start}, {p.end}){shape} {move}")
    return " | ".join(parts)


def _table_steps(total_steps: int, layouts: list[list[Phase]]) -> list[int]:
    even = {round(i * (total_steps - 1) / (TABLE_ROWS - 1)) for i in range(TABLE_ROWS)}
    bounds = {p.start for layout in layouts for p in layout} | {total_steps - 1}
    return sorted(even | bounds)


def table(schedules: list[Any], peak_lr: float, total_steps: int) -> str:
    """A text table of the LR at ~20 evenly spaced steps plus every phase boundary."""
    layouts = [phases(s, total_steps) for s in schedules]
    funcs = [lr_multiplier(s, total_steps) for s in schedules]
    steps = _table_steps(total_steps, layouts)
    width = max(len(str(total_steps)), 4)
    lines = [
        f"peak lr {peak_lr:g}, {total_steps} steps (step is 0-based; lr is the LR of that optimizer step)"
    ]
    if len(schedules) == 1:
        s, layout, f = schedules[0], layouts[0], funcs[0]
        lines += [
            f"{s.kind}: {describe(s, layout)}",
            "",
            f"{'step':>{width}}  {'lr':>10}  {'x peak':>7}  phase",
        ]
        for step in steps:
            phase = next(p for p in reversed(layout) if step >= p.start)
            mark = "*" if step == phase.start else " "
            lines.append(f"{step:>{width}}  {peak_lr * f(step):>10.4e}  {f(step):>7.4f} {mark}{phase.name}")
        lines.append("(* = first step of a phase)")
        return "\n".join(lines)
    for s, layout in zip(schedules, layouts):
        lines.append(f"{s.kind}: {describe(s, layout)}")
    lines += ["", f"{'step':>{width}}" + "".join(f"  {s.kind:>10}" for s in schedules)]
    for step in steps:
        lines.append(f"{step:>{width}}" + "".join(f"  {peak_lr * f(step):>10.4e}" for f in funcs))
    return "\n".join(lines)


def _plot_steps(total_steps: int, layout: list[Phase]) -> list[int]:
    if total_steps <= MAX_PLOT_POINTS:
        return list(range(total_steps))
    even = {round(i * (total_steps - 1) / (MAX_PLOT_POINTS - 1)) for i in range(MAX_PLOT_POINTS)}
    edges = {s for p in layout for s in (p.start, p.end - 1)}
    return sorted(even | edges)


def _params(schedule: Any) -> str:
    """The schedule's settings that are set (not null), for a plot title."""
    items = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in schedule.model_dump().items()]
    return ", ".join(item for item in items if not item.endswith("=None") and not item.startswith("kind="))


def plot(
    schedules: list[Any], peak_lr: float, total_steps: int, path: str | Path, compare: bool = False
) -> Path:
    """Draw the schedules to a PNG at `path` (Agg backend, no display needed); return the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"plot: {str(path)!r} should end in .png")
    fig = Figure(figsize=(9, 4.8), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for index, schedule in enumerate(schedules):
        layout = phases(schedule, total_steps)
        f = lr_multiplier(schedule, total_steps)
        steps = _plot_steps(total_steps, layout)
        (line,) = ax.plot(steps, [peak_lr * f(s) for s in steps], lw=1.8, label=schedule.kind)
        for p in layout[1:]:
            ax.axvline(p.start, color=line.get_color(), ls=":", lw=0.9, alpha=0.6 if not compare else 0.35)
            if not compare:
                ax.annotate(
                    p.name,
                    xy=(p.start, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(2, -4),
                    textcoords="offset points",
                    rotation=90,
                    va="top",
                    fontsize=7,
                    color="0.3",
                )
        if index == 0 and not compare:
            title = f"{schedule.kind} schedule: peak lr {peak_lr:g}, {total_steps} steps"
            ax.set_title(title + "\n" + textwrap.fill(_params(schedule), 110), fontsize=9)
    if compare:
        ax.set_title(
            f"learning-rate schedules compared: peak lr {peak_lr:g}, {total_steps} steps", fontsize=10
        )
        ax.legend(loc="lower left", bbox_to_anchor=(0.03, 0.03), fontsize=9)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_xlim(0, total_steps)
    ax.set_ylim(0, peak_lr * 1.08)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.25)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path)
    except OSError as exc:
        raise ConfigError(f"plot: cannot write {path}: {exc.strerror or exc}") from None
    return path
