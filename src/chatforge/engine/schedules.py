"""Learning-rate schedules as pure functions of the step: typed configs, phases, and `lr_at`.

Every schedule is a list of **phases** laid out over `total_steps` optimizer steps (steps are 0-based;
`lr_at(cfg, step, ...)` is the LR used by optimizer step number `step`). A phase covering steps
`[start, end)` moves the LR ratio (LR / peak LR) from `begin` towards `finish` with a shape:

    t = (step - start) / (end - start)                    # progress, 0 at the phase's first step
    linear:  begin + (finish - begin) * t
    cosine:  begin + (finish - begin) * (1 - cos(pi * t)) / 2
    sqrt:    begin + (finish - begin) * sqrt(t)           # "1-sqrt" when decaying from 1
    exp:     begin * (finish / begin) ** t                # geometric; begin and finish > 0
    constant: begin

so a phase starts exactly at `begin` and reaches `finish` at step `end`, the first step of the next
phase (for the last phase: the step after training ends, as in nanoGPT's `get_lr`). Warmup phases are
the one exception: `t = (step - start + 1) / (end - start + 1)`, so step 0 trains with
`peak * (start_lr_ratio + (1 - start_lr_ratio) / (warmup + 1))`, never with LR 0, and the step after
warmup is exactly the peak. Steps at or past `total_steps` keep the last phase's `finish` value
(torch's `LambdaLR` evaluates one step past the end).

Kinds (`kind:` in the config; `SCHEDULES` maps each to the function that lays out its phases):

- `cosine`:   warmup, then a half cosine from the peak down to `min_lr_ratio`.
- `wsd`:      warmup, stable at the peak, decay over the last `decay_steps`/`decay_ratio` (shape
              `decay_shape`) to `min_lr_ratio`.
- `wcsd`:     warmup, `num_cycles` cosine cycles (peak -> `cycle_min_ratio`, each restart optionally
              re-warmed), a stable phase at `stable_lr_ratio`, then a final decay to `min_lr_ratio`.
- `constant`: optional warmup, then the peak.
- `infinite`: warmup, cosine cooldown to `constant_lr_ratio`, constant, then a short anneal over the
              last `anneal_steps`/`anneal_ratio` to `min_lr_ratio`.

Lengths are given as steps or as a ratio of `total_steps` (never both; a ratio is rounded to the
nearest step). Give steps, not ratios, for the phases at the start (warmup, cooldown) when a run may be
extended: then lengthening `total_steps` only moves the final decay/anneal, and a WSD or infinite run
can be branched from any checkpoint in its stable/constant phase and given a short anneal.

Re-warm and re-decay (continued pretraining): the schedule is a function of the step *within the
current run*. A run that starts from another run's weights as a new run (new data, new run directory)
counts from step 0, so it re-warms and re-decays by construction, with the same schedule shape as the
first run. `start_lr_ratio` lets that warmup begin from the old run's final LR (e.g. the old
`min_lr_ratio`) instead of from ~0. Resuming an *interrupted* run restores its step counter, so it
continues the schedule where it stopped and does not re-warm.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BeforeValidator, Field, TypeAdapter, model_validator

from chatforge.config import StrictModel
from chatforge.errors import ConfigError

Shape = Literal["warmup", "constant", "linear", "cosine", "sqrt", "exp"]
DecayShape = Literal["linear", "cosine", "sqrt", "exp"]

_INTERPOLATE: dict[str, Callable[[float, float, float], float]] = {
    "warmup": lambda a, b, t: a + (b - a) * t,
    "constant": lambda a, b, t: a,
    "linear": lambda a, b, t: a + (b - a) * t,
    "cosine": lambda a, b, t: a + (b - a) * 0.5 * (1.0 - math.cos(math.pi * t)),
    "sqrt": lambda a, b, t: a + (b - a) * math.sqrt(t),
    "exp": lambda a, b, t: a * (b / a) ** t,
}


@dataclass(frozen=True)
class Phase:
    """Steps `[start, end)` moving the LR ratio from `begin` towards `finish` with `shape`."""

    name: str
    start: int
    end: int
    begin: float
    finish: float
    shape: Shape

    def ratio(self, step: int) -> float:
        """LR / peak LR at `step` (which must lie in `[start, end)`)."""
        n, k = self.end - self.start, step - self.start
        t = (k + 1) / (n + 1) if self.shape == "warmup" else k / n
        return _INTERPOLATE[self.shape](self.begin, self.finish, t)


# --------------------------------------------------------------------------------------------- configs


def _steps_field(what: str) -> Any:
    return Field(None, ge=0, description=f"{what} in optimizer steps (give this or the ratio, not both)")


def _ratio_field(default: float | None, what: str) -> Any:
    return Field(
        default,
        ge=0.0,
        le=1.0,
        description=f"{what} as a fraction of total steps (used when the steps key is not given)",
    )


class _Schedule(StrictModel):
    """Fields shared by every kind: linear warmup from `start_lr_ratio` to the peak."""

    # (steps key, ratio key) pairs: giving the steps key clears the ratio's default; giving both is an error.
    _pairs: ClassVar[tuple[tuple[str, str], ...]] = (("warmup_steps", "warmup_ratio"),)

    kind: str = Field("", description="schedule kind")  # each kind narrows this to its Literal
    warmup_steps: int | None = _steps_field("linear warmup length")
    warmup_ratio: float | None = _ratio_field(0.01, "linear warmup length")
    start_lr_ratio: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="LR at the start of warmup as a fraction of the peak; for a re-warm, the old run's final ratio",
    )

    @model_validator(mode="before")
    @classmethod
    def _steps_clear_ratio(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for steps_key, ratio_key in cls._pairs:
                if data.get(steps_key) is not None and ratio_key not in data:
                    data = {**data, ratio_key: None}
        return data

    @model_validator(mode="after")
    def _one_of_each_pair(self) -> _Schedule:
        for steps_key, ratio_key in self._pairs:
            if getattr(self, steps_key) is not None and getattr(self, ratio_key) is not None:
                raise ValueError(
                    f"give {steps_key} or {ratio_key}, not both "
                    f"(got {steps_key}={getattr(self, steps_key)}, {ratio_key}={getattr(self, ratio_key)}; "
                    f"set the other to null)"
                )
        return self

    def steps(self, key: str, total_steps: int) -> int:
        """The length named `key` (e.g. "warmup") in steps: `<key>_steps`, else `<key>_ratio` x total, rounded."""
        steps = getattr(self, f"{key}_steps")
        if steps is not None:
            return steps
        ratio = getattr(self, f"{key}_ratio")
        return 0 if ratio is None else int(ratio * total_steps + 0.5)


def _min_lr_field(default: float) -> Any:
    return Field(default, ge=0.0, le=1.0, description="final LR as a fraction of the peak (the floor)")


def _check_exp(shape: str, shape_key: str, pairs: list[tuple[str, float]]) -> None:
    for key, value in pairs:
        if shape == "exp" and value <= 0:
            raise ValueError(f"{shape_key}='exp' decays geometrically and needs {key} > 0 (got {value})")


class CosineSchedule(_Schedule):
    """Linear warmup, then a half cosine from the peak to `min_lr_ratio` at the end of training."""

    kind: Literal["cosine"] = Field("cosine", description="schedule kind")
    min_lr_ratio: float = _min_lr_field(0.1)


class WSDSchedule(_Schedule):
    """Warmup-stable-decay: warmup, the peak until the last `decay` steps, then a decay to the floor."""

    _pairs: ClassVar[tuple[tuple[str, str], ...]] = (
        ("warmup_steps", "warmup_ratio"),
        ("decay_steps", "decay_ratio"),
    )

    kind: Literal["wsd"] = Field("wsd", description="schedule kind")
    decay_steps: int | None = _steps_field("final decay length")
    decay_ratio: float | None = _ratio_field(0.2, "final decay length")
    decay_shape: DecayShape = Field(
        "sqrt",
        description="decay curve: linear, cosine, sqrt (1-sqrt), or exp (geometric, needs min_lr_ratio > 0)",
    )
    min_lr_ratio: float = _min_lr_field(0.01)

    @model_validator(mode="after")
    def _exp_needs_floor(self) -> WSDSchedule:
        _check_exp(self.decay_shape, "decay_shape", [("min_lr_ratio", self.min_lr_ratio)])
        return self


class WCSDSchedule(_Schedule):
    """Warm-cosine-stable-decay: warmup, cosine cycles, a stable phase, a final decay (seed 001, 5.2)."""

    _pairs: ClassVar[tuple[tuple[str, str], ...]] = (
        ("warmup_steps", "warmup_ratio"),
        ("stable_steps", "stable_ratio"),
        ("decay_steps", "decay_ratio"),
    )

    kind: Literal["wcsd"] = Field("wcsd", description="schedule kind")
    num_cycles: int = Field(
        3, ge=1, le=1000, description="number of cosine cycles between warmup and the stable phase"
    )
    cycle_min_ratio: float = Field(
        0.1, ge=0.0, le=1.0, description="LR at the end of each cosine cycle, as a fraction of the peak"
    )
    cycle_warmup_ratio: float = Field(
        0.0,
        ge=0.0,
        le=0.5,
        description="re-warm at each restart (and into the stable phase) as a fraction of a cycle; 0 = jump back up",
    )
    stable_steps: int | None = _steps_field("stable phase length")
    stable_ratio: float | None = _ratio_field(0.1, "stable phase length")
    stable_lr_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="LR of the stable phase as a fraction of the peak"
    )
    decay_steps: int | None = _steps_field("final decay length")
    decay_ratio: float | None = _ratio_field(0.1, "final decay length")
    decay_shape: DecayShape = Field(
        "sqrt",
        description="final decay curve: linear, cosine, sqrt (1-sqrt), or exp (needs min_lr_ratio > 0)",
    )
    min_lr_ratio: float = _min_lr_field(0.01)

    @model_validator(mode="after")
    def _ordered(self) -> WCSDSchedule:
        if self.min_lr_ratio > self.stable_lr_ratio:
            raise ValueError(
                f"min_lr_ratio ({self.min_lr_ratio}) must not exceed stable_lr_ratio ({self.stable_lr_ratio})"
            )
        _check_exp(self.decay_shape, "decay_shape", [("min_lr_ratio", self.min_lr_ratio)])
        return self


class ConstantSchedule(_Schedule):
    """Optional linear warmup, then the peak LR until the end."""

    kind: Literal["constant"] = Field("constant", description="schedule kind")
    warmup_ratio: float | None = _ratio_field(0.0, "linear warmup length")


class InfiniteSchedule(_Schedule):
    """Warmup, cosine cooldown to a constant LR, constant, then a short anneal at the end (seed 002, 1.2)."""

    _pairs: ClassVar[tuple[tuple[str, str], ...]] = (
        ("warmup_steps", "warmup_ratio"),
        ("cooldown_steps", "cooldown_ratio"),
        ("anneal_steps", "anneal_ratio"),
    )

    kind: Literal["infinite"] = Field("infinite", description="schedule kind")
    cooldown_steps: int | None = _steps_field("cosine cooldown (peak -> constant_lr_ratio) length")
    cooldown_ratio: float | None = _ratio_field(0.2, "cosine cooldown (peak -> constant_lr_ratio) length")
    constant_lr_ratio: float = Field(
        0.5, ge=0.0, le=1.0, description="LR of the constant phase as a fraction of the peak"
    )
    anneal_steps: int | None = _steps_field("final anneal length")
    anneal_ratio: float | None = _ratio_field(0.1, "final anneal length")
    anneal_shape: DecayShape = Field(
        "exp",
        description="anneal curve: exp (geometric, needs min_lr_ratio > 0), linear, cosine, or sqrt (1-sqrt)",
    )
    min_lr_ratio: float = _min_lr_field(0.01)

    @model_validator(mode="after")
    def _ordered(self) -> InfiniteSchedule:
        if self.min_lr_ratio > self.constant_lr_ratio:
            raise ValueError(
                f"min_lr_ratio ({self.min_lr_ratio}) must not exceed constant_lr_ratio ({self.constant_lr_ratio})"
            )
        _check_exp(
            self.anneal_shape,
            "anneal_shape",
            [("constant_lr_ratio", self.constant_lr_ratio), ("min_lr_ratio", self.min_lr_ratio)],
        )
        return self


SCHEDULE_CONFIGS: dict[str, type[_Schedule]] = {
    model.model_fields["kind"].default: model
    for model in (CosineSchedule, WSDSchedule, WCSDSchedule, ConstantSchedule, InfiniteSchedule)
}
"""kind -> its config class."""
DEFAULT_KIND = "cosine"


def _check_kind_keys(value: Any) -> Any:
    """Default a missing `kind` to cosine, and name the kind when a key belongs to another kind."""
    if not isinstance(value, dict):
        return value
    value = {"kind": DEFAULT_KIND, **value}
    by_kind = SCHEDULE_CONFIGS
    model = by_kind.get(value["kind"])
    if model is None:
        return value  # pydantic reports the unknown tag with the valid ones
    for key in value:
        if key not in model.model_fields:
            owners = [kind for kind, other in by_kind.items() if key in other.model_fields]
            guess = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.6)
            if owners:
                hint = f" (it belongs to kind {', '.join(owners)})"
            else:
                hint = f" (did you mean {guess[0]!r}?)" if guess else ""
            raise ValueError(
                f"unknown key {key!r} for kind {value['kind']!r}{hint}; "
                f"keys of {value['kind']!r}: {', '.join(model.model_fields)}"
            )
    return value


ScheduleConfig = Annotated[
    Union[CosineSchedule, WSDSchedule, WCSDSchedule, ConstantSchedule, InfiniteSchedule],
    Field(discriminator="kind"),
    BeforeValidator(_check_kind_keys),
]
"""One of the schedule configs, chosen by its `kind` key (default `cosine` when the key is missing)."""


def default_schedule(**spec: Any) -> Callable[[], Any]:
    """A `default_factory` for a stage config's `schedule` field: the schedule `spec` describes
    (`default_schedule(kind="cosine", warmup_ratio=0.1)`), validated like a user's `schedule:`."""
    adapter = TypeAdapter(ScheduleConfig)
    return lambda: adapter.validate_python(spec)


# --------------------------------------------------------------------------------------------- layouts


def _fail(cfg: _Schedule, total_steps: int, what: str) -> ConfigError:
    return ConfigError(f"schedule (kind {cfg.kind!r}, total_steps={total_steps}): {what}")


def _lengths(cfg: _Schedule, total_steps: int, *keys: str) -> dict[str, int]:
    """Resolve the named lengths and check that they fit into `total_steps`."""
    lengths = {key: cfg.steps(key, total_steps) for key in keys}
    if sum(lengths.values()) > total_steps:
        parts = " + ".join(f"{key} {n}" for key, n in lengths.items())
        given = ", ".join(_given(cfg, key) for key in keys)
        raise _fail(cfg, total_steps, f"{parts} = {sum(lengths.values())} steps do not fit ({given})")
    return lengths


def _given(cfg: _Schedule, key: str) -> str:
    steps = getattr(cfg, f"{key}_steps")
    return f"{key}_steps={steps}" if steps is not None else f"{key}_ratio={getattr(cfg, f'{key}_ratio')}"


def _warmup(cfg: _Schedule, steps: int) -> list[Phase]:
    return [Phase("warmup", 0, steps, cfg.start_lr_ratio, 1.0, "warmup")] if steps else []


def _cosine_phases(cfg: CosineSchedule, total_steps: int) -> list[Phase]:
    w = _lengths(cfg, total_steps, "warmup")["warmup"]
    if w >= total_steps:
        raise _fail(
            cfg,
            total_steps,
            f"warmup takes all {w} steps ({_given(cfg, 'warmup')}); nothing is left to decay",
        )
    return _warmup(cfg, w) + [Phase("cosine", w, total_steps, 1.0, cfg.min_lr_ratio, "cosine")]


def _wsd_phases(cfg: WSDSchedule, total_steps: int) -> list[Phase]:
    n = _lengths(cfg, total_steps, "warmup", "decay")
    decay_start = total_steps - n["decay"]
    return _warmup(cfg, n["warmup"]) + [
        Phase("stable", n["warmup"], decay_start, 1.0, 1.0, "constant"),
        Phase("decay", decay_start, total_steps, 1.0, cfg.min_lr_ratio, cfg.decay_shape),
    ]


def _wcsd_phases(cfg: WCSDSchedule, total_steps: int) -> list[Phase]:
    n = _lengths(cfg, total_steps, "warmup", "stable", "decay")
    cycles_start = n["warmup"]
    stable_start = total_steps - n["decay"] - n["stable"]
    span = stable_start - cycles_start
    if span < cfg.num_cycles:
        raise _fail(
            cfg,
            total_steps,
            f"{span} steps are left for num_cycles={cfg.num_cycles} cosine cycles after warmup, stable and decay "
            f"({_given(cfg, 'warmup')}, {_given(cfg, 'stable')}, {_given(cfg, 'decay')}); need at least 1 step each",
        )
    out = _warmup(cfg, n["warmup"])
    bounds = [cycles_start + int(k * span / cfg.num_cycles + 0.5) for k in range(cfg.num_cycles + 1)]
    for k, (start, end) in enumerate(zip(bounds, bounds[1:])):
        # The first cycle follows the main warmup; later ones restart, re-warmed when asked.
        rewarm = 0 if k == 0 else min(int(cfg.cycle_warmup_ratio * (end - start) + 0.5), end - start - 1)
        if rewarm:
            out.append(Phase(f"rewarm {k + 1}", start, start + rewarm, cfg.cycle_min_ratio, 1.0, "warmup"))
        out.append(Phase(f"cycle {k + 1}", start + rewarm, end, 1.0, cfg.cycle_min_ratio, "cosine"))
    stable_rewarm = min(int(cfg.cycle_warmup_ratio * span / cfg.num_cycles + 0.5), n["stable"])
    if cfg.stable_lr_ratio <= cfg.cycle_min_ratio:
        stable_rewarm = 0
    if stable_rewarm:
        out.append(
            Phase(
                "rewarm",
                stable_start,
                stable_start + stable_rewarm,
                cfg.cycle_min_ratio,
                cfg.stable_lr_ratio,
                "warmup",
            )
        )
    stable = cfg.stable_lr_ratio
    out.append(
        Phase("stable", stable_start + stable_rewarm, stable_start + n["stable"], stable, stable, "constant")
    )
    out.append(
        Phase(
            "decay",
            total_steps - n["decay"],
            total_steps,
            cfg.stable_lr_ratio,
            cfg.min_lr_ratio,
            cfg.decay_shape,
        )
    )
    return out


def _constant_phases(cfg: ConstantSchedule, total_steps: int) -> list[Phase]:
    w = _lengths(cfg, total_steps, "warmup")["warmup"]
    return _warmup(cfg, w) + [Phase("constant", w, total_steps, 1.0, 1.0, "constant")]


def _infinite_phases(cfg: InfiniteSchedule, total_steps: int) -> list[Phase]:
    n = _lengths(cfg, total_steps, "warmup", "cooldown", "anneal")
    constant_start = n["warmup"] + n["cooldown"]
    anneal_start = total_steps - n["anneal"]
    return _warmup(cfg, n["warmup"]) + [
        Phase("cooldown", n["warmup"], constant_start, 1.0, cfg.constant_lr_ratio, "cosine"),
        Phase(
            "constant", constant_start, anneal_start, cfg.constant_lr_ratio, cfg.constant_lr_ratio, "constant"
        ),
        Phase("anneal", anneal_start, total_steps, cfg.constant_lr_ratio, cfg.min_lr_ratio, cfg.anneal_shape),
    ]


SCHEDULES: dict[str, Callable[[Any, int], list[Phase]]] = {
    "cosine": _cosine_phases,
    "wsd": _wsd_phases,
    "wcsd": _wcsd_phases,
    "constant": _constant_phases,
    "infinite": _infinite_phases,
}
"""kind -> function laying out that kind's phases over `total_steps`."""

SCHEDULE_KINDS: tuple[str, ...] = tuple(SCHEDULES)


# --------------------------------------------------------------------------------------------- public API


def phases(cfg: ScheduleConfig, total_steps: int) -> list[Phase]:
    """The non-empty phases of `cfg` over `total_steps` steps, in order, covering `[0, total_steps)`."""
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ConfigError(f"total_steps must be a positive integer (got {total_steps!r})")
    return [p for p in SCHEDULES[cfg.kind](cfg, total_steps) if p.end > p.start]


def lr_multiplier(cfg: ScheduleConfig, total_steps: int) -> Callable[[int], float]:
    """`step -> LR / peak LR`, with the phases laid out once (for `torch.optim.lr_scheduler.LambdaLR`)."""
    layout = phases(cfg, total_steps)
    starts = [p.start for p in layout]

    def multiplier(step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0 (got {step})")
        if step >= total_steps:
            return layout[-1].finish
        # Few phases (at most ~2 per cycle): a linear scan from the end is fast enough.
        for phase, start in zip(reversed(layout), reversed(starts)):
            if step >= start:
                return phase.ratio(step)
        raise AssertionError("phases must start at step 0")

    return multiplier


def lr_at(cfg: ScheduleConfig, step: int, total_steps: int, peak_lr: float) -> float:
    """The LR of optimizer step `step` (0-based) in a run of `total_steps` steps peaking at `peak_lr`."""
    return peak_lr * lr_multiplier(cfg, total_steps)(step)


def schedule_points(cfg: ScheduleConfig, total_steps: int, peak_lr: float) -> list[float]:
    """`[lr_at(cfg, s, total_steps, peak_lr) for s in range(total_steps)]`, laid out once."""
    out: list[float] = []
    for phase in phases(cfg, total_steps):
        out += [peak_lr * phase.ratio(step) for step in range(phase.start, phase.end)]
    return out
