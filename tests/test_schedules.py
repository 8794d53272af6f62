"""Learning-rate schedules: hand-computed values per kind, shape properties, config errors, the CLI."""

from __future__ import annotations

import math
import typing

import pytest
import yaml
from pydantic import Field

from chatforge import cli
from chatforge.config import StrictModel
from chatforge.config.load import dump_config, validate_config
from chatforge.engine.schedules import (
    SCHEDULE_CONFIGS,
    SCHEDULES,
    ConstantSchedule,
    CosineSchedule,
    InfiniteSchedule,
    ScheduleConfig,
    WCSDSchedule,
    WSDSchedule,
    lr_at,
    lr_multiplier,
    phases,
    schedule_points,
)
from chatforge.errors import ConfigError
from chatforge.stages import schedule as stage


class Holder(StrictModel):
    schedule: ScheduleConfig = Field(default_factory=CosineSchedule)


def parse(data: dict) -> typing.Any:
    return validate_config(Holder, {"schedule": data}).schedule


# ------------------------------------------------------------------------------- hand-computed values


def test_cosine_values():
    """warmup_steps=10, total 110, peak 1e-3, min_lr_ratio 0.1.

    warmup: lr(s) = 1e-3 * (s+1)/11          -> lr(0) = 1e-3/11, lr(9) = 1e-3 * 10/11
    cosine over steps [10, 110): t = (s-10)/100, lr = 1e-4 + 0.5*(1+cos(pi*t)) * 0.9e-3
      lr(10) = 1e-3 (t = 0)
      lr(60) = 1e-4 + 0.5*(1+cos(pi/2)) * 0.9e-3 = 1e-4 + 0.45e-3 = 5.5e-4
      lr(85) = 1e-4 + 0.5*(1+cos(3pi/4)) * 0.9e-3 = 1e-4 + 0.5*(1-0.7071068) * 0.9e-3 = 2.318019e-4
    past the end: the floor, 1e-4.
    """
    cfg = CosineSchedule(warmup_steps=10, min_lr_ratio=0.1)
    assert cfg.warmup_ratio is None
    expect = {0: 1e-3 / 11, 9: 1e-3 * 10 / 11, 10: 1e-3, 60: 5.5e-4, 85: 2.318019e-4, 110: 1e-4, 500: 1e-4}
    for step, lr in expect.items():
        assert lr_at(cfg, step, 110, 1e-3) == pytest.approx(lr, rel=1e-6), step
    assert lr_at(cfg, 109, 110, 1e-3) == pytest.approx(1e-4 + 0.5 * (1 + math.cos(math.pi * 0.99)) * 0.9e-3)


def test_warmup_ratio_rounds_to_nearest_step_and_defaults():
    """warmup_ratio 0.015 of 100 steps = 1.5 -> 2 steps; the default ratio 0.01 of 1000 = 10 steps."""
    assert phases(CosineSchedule(warmup_ratio=0.015), 100)[0].end == 2
    assert phases(CosineSchedule(), 1000)[0].end == 10


@pytest.mark.parametrize(
    ("shape", "min_ratio", "expect"),
    [
        # decay over [80, 100): t = (s-80)/20
        ("linear", 0.0, {85: 0.75, 90: 0.5, 99: 0.05}),  # 1 - t
        ("cosine", 0.0, {90: 0.5, 85: 0.5 * (1 + math.cos(math.pi / 4))}),  # (1+cos(pi t))/2
        ("sqrt", 0.1, {85: 0.55, 90: 1 - 0.9 * math.sqrt(0.5)}),  # 0.1 + 0.9 (1 - sqrt t); sqrt(.25)=.5
        ("exp", 0.01, {90: 0.1, 85: 0.01**0.25}),  # 1 * (0.01/1)^t
    ],
)
def test_wsd_values(shape, min_ratio, expect):
    """warmup 10, stable at 1.0 on [10, 80), decay_steps 20 on [80, 100), peak 1.0."""
    cfg = WSDSchedule(warmup_steps=10, decay_steps=20, decay_shape=shape, min_lr_ratio=min_ratio)
    base = {0: 1 / 11, 10: 1.0, 50: 1.0, 79: 1.0, 80: 1.0, 100: min_ratio}
    for step, lr in {**base, **expect}.items():
        assert lr_at(cfg, step, 100, 1.0) == pytest.approx(lr, rel=1e-9, abs=1e-12), (shape, step)


def test_wcsd_values():
    """No warmup, 2 cycles on [0, 80) (bounds 0, 40, 80), stable 10 steps at 0.8, linear decay 10 steps to 0.

    cycle k: lr = 0.2 + 0.8 * 0.5*(1+cos(pi t)), t = (s - start)/40
      lr(0) = 1, lr(20) = 0.2 + 0.4 = 0.6, lr(39) = 0.2 + 0.4*(1+cos(pi*39/40)), lr(40) = 1 (restart)
    stable [80, 90): 0.8;  decay [90, 100): 0.8*(1 - (s-90)/10): lr(95) = 0.4
    """
    cfg = WCSDSchedule(
        warmup_steps=0,
        num_cycles=2,
        cycle_min_ratio=0.2,
        stable_steps=10,
        stable_lr_ratio=0.8,
        decay_steps=10,
        decay_shape="linear",
        min_lr_ratio=0.0,
    )
    expect = {0: 1.0, 20: 0.6, 39: 0.2 + 0.4 * (1 + math.cos(math.pi * 39 / 40)), 40: 1.0, 60: 0.6}
    expect |= {80: 0.8, 89: 0.8, 90: 0.8, 95: 0.4, 99: 0.08}
    for step, lr in expect.items():
        assert lr_at(cfg, step, 100, 1.0) == pytest.approx(lr, rel=1e-9), step


def test_wcsd_rewarm_between_cycles():
    """cycle_warmup_ratio 0.25 of a 40-step cycle = 10 re-warm steps from 0.2 up to 1 with the warmup rule.

    rewarm [40, 50): 0.2 + 0.8*(s-40+1)/11 -> lr(40) = 0.2 + 0.8/11; cycle 2 cosine on [50, 80): lr(65) = 0.6.
    Into the stable phase: round(0.25 * 80/2) = 10 steps = the whole stable phase, 0.2 -> 0.8.
    """
    cfg = WCSDSchedule(
        warmup_steps=0,
        num_cycles=2,
        cycle_min_ratio=0.2,
        cycle_warmup_ratio=0.25,
        stable_steps=10,
        stable_lr_ratio=0.8,
        decay_steps=10,
        min_lr_ratio=0.01,
    )
    names = [(p.name, p.start, p.end) for p in phases(cfg, 100)]
    assert names == [
        ("cycle 1", 0, 40),
        ("rewarm 2", 40, 50),
        ("cycle 2", 50, 80),
        ("rewarm", 80, 90),
        ("decay", 90, 100),
    ]
    assert lr_at(cfg, 40, 100, 1.0) == pytest.approx(0.2 + 0.8 / 11)
    assert lr_at(cfg, 50, 100, 1.0) == pytest.approx(1.0)
    assert lr_at(cfg, 65, 100, 1.0) == pytest.approx(0.6)
    assert lr_at(cfg, 80, 100, 1.0) == pytest.approx(0.2 + 0.6 / 11)


def test_constant_values_and_start_lr_ratio():
    """warmup 4: (s+1)/5 -> 0.2, 0.4, 0.6, 0.8, then 1. With start_lr_ratio 0.5: 0.5 + 0.5*(s+1)/5."""
    cfg = ConstantSchedule(warmup_steps=4)
    assert schedule_points(cfg, 8, 2.0) == pytest.approx([0.4, 0.8, 1.2, 1.6, 2.0, 2.0, 2.0, 2.0])
    rewarm = ConstantSchedule(warmup_steps=4, start_lr_ratio=0.5)
    assert schedule_points(rewarm, 6, 1.0) == pytest.approx([0.6, 0.7, 0.8, 0.9, 1.0, 1.0])
    assert schedule_points(ConstantSchedule(), 3, 1.0) == [1.0, 1.0, 1.0]  # no warmup by default


@pytest.mark.parametrize(
    ("shape", "at90"),
    [("exp", 0.5 * 0.1**0.5), ("linear", 0.275)],  # 0.5*(0.05/0.5)^0.5 ; 0.5 - 0.45*0.5
)
def test_infinite_values(shape, at90):
    """warmup 10, cosine cooldown [10, 50) 1 -> 0.5, constant [50, 80) at 0.5, anneal [80, 100) to 0.05.

    lr(30) = 0.5 + 0.5*0.5*(1+cos(pi/2)) = 0.75; lr(60) = 0.5; lr(90): t = 0.5 of the anneal.
    """
    cfg = InfiniteSchedule(
        warmup_steps=10,
        cooldown_steps=40,
        constant_lr_ratio=0.5,
        anneal_steps=20,
        anneal_shape=shape,
        min_lr_ratio=0.05,
    )
    expect = {10: 1.0, 30: 0.75, 50: 0.5, 60: 0.5, 79: 0.5, 80: 0.5, 90: at90, 100: 0.05}
    for step, lr in expect.items():
        assert lr_at(cfg, step, 100, 1.0) == pytest.approx(lr, rel=1e-9), step


# ------------------------------------------------------------------------------- shape properties

CASES = [
    CosineSchedule(),
    CosineSchedule(warmup_steps=37, min_lr_ratio=0.0),
    WSDSchedule(),
    WSDSchedule(decay_shape="linear", decay_ratio=0.5, min_lr_ratio=0.0),
    WSDSchedule(decay_shape="exp", warmup_steps=0),
    WSDSchedule(decay_shape="cosine", start_lr_ratio=0.3),
    WCSDSchedule(),
    WCSDSchedule(num_cycles=5, cycle_warmup_ratio=0.2, stable_lr_ratio=0.6, decay_shape="exp"),
    ConstantSchedule(warmup_ratio=0.1),
    InfiniteSchedule(),
    InfiniteSchedule(anneal_shape="sqrt", cooldown_steps=0, min_lr_ratio=0.0),
]


def _floor(cfg) -> float:
    return min(getattr(cfg, "min_lr_ratio", 1.0), getattr(cfg, "cycle_min_ratio", 1.0), cfg.start_lr_ratio)


@pytest.mark.parametrize("cfg", CASES, ids=lambda c: f"{c.kind}")
def test_bounds_monotone_and_points(cfg):
    total, peak = 997, 3e-4
    points = schedule_points(cfg, total, peak)
    assert points == [lr_at(cfg, s, total, peak) for s in range(total)]
    assert max(points) <= peak * (1 + 1e-12)
    assert min(points) >= peak * _floor(cfg) - 1e-15
    assert min(points) > 0 or _floor(cfg) == 0
    layout = phases(cfg, total)
    assert layout[0].start == 0 and layout[-1].end == total
    assert all(a.end == b.start for a, b in zip(layout, layout[1:]))
    for p in layout:
        seg = points[p.start : p.end]
        pairs = list(zip(seg, seg[1:]))
        if p.begin > p.finish:
            assert all(b <= a for a, b in pairs), p
        elif p.begin < p.finish:
            assert all(b >= a for a, b in pairs), p
        else:
            assert seg == [pytest.approx(peak * p.begin)] * len(seg), p


@pytest.mark.parametrize("cfg", CASES, ids=lambda c: f"{c.kind}")
def test_continuous_at_boundaries(cfg):
    """Where a phase starts at the value the previous one heads to, the LR makes no jump bigger than the
    steps around it; where it does not (a cycle restart without re-warm), the jump is there."""
    total = 997
    points = schedule_points(cfg, total, 1.0)
    for prev, phase in zip(phases(cfg, total), phases(cfg, total)[1:]):
        b = phase.start
        if phase.shape != "warmup":  # a warmup's first step is already one step up from `begin`
            assert points[b] == pytest.approx(phase.begin), phase
        jump = abs(points[b] - points[b - 1])
        if prev.finish == phase.begin:
            around = abs(points[b - 1] - points[b - 2]) + abs(points[min(b + 1, total - 1)] - points[b])
            assert jump <= around + 1e-12, (prev, phase)
        else:
            assert jump > 0.1, (prev, phase)


def test_dispatch_table_matches_union_literals():
    union = typing.get_args(ScheduleConfig)[0]
    literals = {
        lit
        for model in typing.get_args(union)
        for lit in typing.get_args(model.model_fields["kind"].annotation)
    }
    assert set(SCHEDULES) == literals == set(SCHEDULE_CONFIGS)


def test_multiplier_past_the_end_and_bad_steps():
    f = lr_multiplier(WSDSchedule(min_lr_ratio=0.02), 100)
    assert f(100) == f(10_000) == 0.02
    with pytest.raises(ValueError, match="step must be >= 0"):
        f(-1)
    with pytest.raises(ConfigError, match="total_steps must be a positive integer"):
        phases(CosineSchedule(), 0)


def test_rewarm_starts_from_the_old_runs_final_lr():
    """A continued-pretraining run counts from step 0: it re-warms from start_lr_ratio and re-decays."""
    old = CosineSchedule(warmup_steps=10, min_lr_ratio=0.1)
    new = CosineSchedule(warmup_steps=10, min_lr_ratio=0.1, start_lr_ratio=0.1)
    end_of_old = lr_at(old, 10_000, 1000, 1.0)
    new_points = schedule_points(new, 1000, 1.0)
    assert end_of_old == pytest.approx(0.1)
    assert new_points[0] == pytest.approx(0.1 + 0.9 / 11) and new_points[10] == 1.0
    assert new_points[-1] == pytest.approx(lr_at(old, 999, 1000, 1.0))


# ------------------------------------------------------------------------------- config errors


def test_missing_kind_defaults_to_cosine_and_dump_reloads():
    assert parse({"warmup_steps": 5}) == CosineSchedule(warmup_steps=5)
    for cfg in CASES:
        reloaded = validate_config(Holder, yaml.safe_load(dump_config(Holder(schedule=cfg))))
        assert reloaded.schedule == cfg


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"kind": "cosine", "decay_ratio": 0.1},
            "unknown key 'decay_ratio' for kind 'cosine' (it belongs to kind wsd, wcsd)",
        ),
        ({"kind": "wsd", "decay_rato": 0.1}, "did you mean 'decay_ratio'?"),
        ({"warmup_steps": 10, "warmup_ratio": 0.1}, "give warmup_steps or warmup_ratio, not both"),
        (
            {"kind": "infinite", "anneal_steps": 5, "anneal_ratio": 0.1},
            "give anneal_steps or anneal_ratio, not both",
        ),
        ({"kind": "wsd", "decay_shape": "exp", "min_lr_ratio": 0}, "decay_shape='exp'"),
        (
            {"kind": "infinite", "constant_lr_ratio": 0.1, "min_lr_ratio": 0.2},
            "must not exceed constant_lr_ratio",
        ),
        ({"kind": "wcsd", "stable_lr_ratio": 0.0}, "must not exceed stable_lr_ratio"),
        (
            {"kind": "cosine", "min_lr_ratio": 1.5},
            "schedule.min_lr_ratio: Input should be less than or equal to 1",
        ),
        ({"kind": "wsd", "decay_shape": "quad"}, "schedule.decay_shape"),
        ({"kind": "linear"}, "'cosine', 'wsd', 'wcsd', 'constant', 'infinite'"),
        ({"kind": "cosine", "warmup_steps": -1}, "schedule.warmup_steps"),
    ],
)
def test_config_errors_name_the_keys(data, message):
    with pytest.raises(ConfigError) as err:
        parse(data)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("cfg", "total", "message"),
    [
        (CosineSchedule(warmup_steps=50), 50, "warmup takes all 50 steps (warmup_steps=50)"),
        (WSDSchedule(warmup_steps=80, decay_ratio=0.5), 100, "warmup 80 + decay 50 = 130 steps do not fit"),
        (InfiniteSchedule(cooldown_steps=900), 1000, "cooldown 900 + anneal 100"),
        (WCSDSchedule(num_cycles=30), 30, "for num_cycles=30 cosine cycles"),
    ],
)
def test_layout_errors_name_the_keys(cfg, total, message):
    with pytest.raises(ConfigError, match="schedule \\(kind") as err:
        phases(cfg, total)
    assert message in str(err.value)


# ------------------------------------------------------------------------------- `chatforge schedule`


def test_cli_prints_a_table(capsys):
    assert (
        cli.main(["schedule", "schedule.kind=wsd", "schedule.warmup_steps=10", "total_steps=200", "lr=1e-3"])
        == 0
    )
    out = capsys.readouterr().out
    assert "wsd: warmup [0, 10) 0 -> 1 | stable [10, 160) 1 | decay [160, 200) sqrt 1 -> 0.01" in out
    rows = [line.split() for line in out.splitlines() if line[:5].strip().isdigit()]
    steps = [int(r[0]) for r in rows]
    assert {0, 10, 160, 199} <= set(steps) and len(steps) >= 20 and steps == sorted(steps)
    by_step = {int(r[0]): float(r[1]) for r in rows}
    assert by_step[10] == pytest.approx(1e-3) and by_step[0] == pytest.approx(1e-3 / 11, rel=1e-4)


def test_cli_compare_table(capsys):
    assert stage.main(["--compare", "cosine,wsd,wcsd,infinite", "total_steps=500"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.split()[:1] == ["step"])
    assert header.split() == ["step", "cosine", "wsd", "wcsd", "infinite"]


def test_cli_plots_png(tmp_path, capsys):
    one = tmp_path / "one.png"
    assert stage.main(["schedule.kind=wcsd", "schedule.cycle_warmup_ratio=0.1", "--plot", str(one)]) == 0
    both = tmp_path / "sub" / "compare.png"
    assert stage.main(["--compare", "cosine,wsd,wcsd,infinite", f"--plot={both}"]) == 0
    for png in (one, both):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 20_000
    assert f"wrote {both}" in capsys.readouterr().out


def test_cli_reads_a_pretrain_config(tmp_path, capsys):
    pretrain = {
        "model": {"preset": "tiny", "num_key_value_heads": 2},
        "data": {"path": "corpus.txt", "seq_len": 128},
        "schedule": {"kind": "infinite", "warmup_steps": 20, "anneal_ratio": 0.05},
        "optim": {"lr": 6e-4, "weight_decay": 0.1, "betas": [0.9, 0.95]},
        "train": {"max_steps": 400, "batch_size": 8},
    }
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(pretrain))
    assert stage.main([str(path), "--print-config"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["lr"] == 6e-4 and resolved["total_steps"] == 400
    assert resolved["schedule"]["kind"] == "infinite" and resolved["schedule"]["warmup_steps"] == 20
    cfg = stage.load(path, ["train.max_steps=1000", "optim.lr=1e-3", "schedule.constant_lr_ratio=0.3"])
    assert (cfg.total_steps, cfg.lr, cfg.schedule.constant_lr_ratio) == (1000, 1e-3, 0.3)
    assert stage.main([str(path)]) == 0
    assert "anneal [380, 400) exp 0.5 -> 0.01" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["schedule", "schedule.kind=wsd", "schedule.decay_rato=0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "did you mean 'decay_ratio'?" in err
    assert cli.main(["schedule", "total_steps=5", "schedule.warmup_steps=5"]) == 2
    assert "warmup takes all 5 steps" in capsys.readouterr().err
    assert cli.main(["schedule", "--compare", "cosine,sgdr"]) == 2
    assert "unknown schedule kind(s) 'sgdr'" in capsys.readouterr().err
    assert cli.main(["schedule", "optim.weight_decay=0.1"]) == 2
    assert "reads only optim.lr" in capsys.readouterr().err
    assert cli.main(["schedule", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert cli.main(["schedule", "--plot", str(tmp_path / "x.jpg")]) == 2
    assert "should end in .png" in capsys.readouterr().err


def test_cli_help_lists_every_kind(capsys):
    assert stage.main(["--help"]) == 0
    out = capsys.readouterr().out
    for kind in SCHEDULES:
        assert f"schedule.kind={kind}:" in out
    assert "schedule.decay_shape" in out and "--plot" in out
