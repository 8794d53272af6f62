"""Mixtures, staged mixtures and replay: proportions, switch points, order and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from chatforge.data.corpus import SourceConfig
from chatforge.data.mixture import MixtureStage, MixtureStream, ReplayConfig, SourceWindows, plan_mixture
from chatforge.errors import ConfigError, DataError

SEQ = 8


def source(name: str, base: int, n_tokens: int = 800) -> SourceWindows:
    """A source whose tokens all lie in [base, base + 100), so a row's origin is visible in its ids."""
    tokens = (base + np.arange(n_tokens) % 100).astype(np.uint16)
    starts = np.arange(0, n_tokens + 1, 40, dtype=np.int64)
    return SourceWindows(name, tokens, starts, SEQ, seed=0, index=base // 1000)


def stream(weights: dict[str, float], batch=4, rows_per_step=4, replay=None, stages=(), max_steps=100, **kw):
    names = list(weights)
    configs = [SourceConfig(path=f"/data/{n}.jsonl", weight=w) for n, w in weights.items()]
    replay_cfg = None
    if replay:
        replay_cfg = ReplayConfig(sources=[SourceConfig(path="/old/old.jsonl")], fraction=replay)
        names.append("old")
    plan = plan_mixture(configs, replay_cfg, list(stages), max_steps, {"decay": 80})
    windows = [source(n, 1000 * (i + 1)) for i, n in enumerate(names)]
    return MixtureStream(windows, plan, batch, rows_per_step, seed=5, **kw)


def origins(batch) -> list[int]:
    return (batch["input_ids"][:, 0] // 1000).tolist()


def test_observed_mixture_matches_the_weights():
    s = stream({"web": 3.0, "books": 1.0})
    rows = [o for _ in range(500) for o in origins(s.next_batch())]  # 2000 rows
    share = rows.count(1) / len(rows)
    # Binomial draw per row: sd = sqrt(.75 * .25 / 2000) = 0.0097; 3 sd
    assert abs(share - 0.75) < 0.03
    assert s.observed_shares()["main"]["web"] == pytest.approx(share)


def test_replay_fraction_is_kept_in_every_batch_region():
    s = stream({"new": 1.0}, replay=0.05)
    rows = [o for _ in range(1000) for o in origins(s.next_batch())]  # 4000 rows
    replayed = rows.count(2) / len(rows)
    # sd = sqrt(.05 * .95 / 4000) = 0.0034; 3 sd
    assert abs(replayed - 0.05) < 0.011
    # Not bunched: each quarter of the run holds its share too (sd 0.0069 per quarter; 4 sd).
    for q in range(4):
        part = rows[q * 1000 : (q + 1) * 1000]
        assert abs(part.count(2) / 1000 - 0.05) < 0.028


def test_stages_switch_at_their_steps_and_replay_spans_them():
    stages = [
        MixtureStage(name="fast", weights={"web": 1.0}),
        MixtureStage(name="stable", start_fraction=0.5, weights={"web": 1.0}),
        MixtureStage(name="anneal", start_phase="decay", weights={"web": 0.5, "sft": 0.5}),
    ]
    s = stream({"web": 1.0, "sft": 1.0}, replay=0.1, stages=stages, max_steps=100)
    assert [start for start, _, _ in s.plan.stages] == [0, 50, 80]
    per_step = [origins(s.next_batch()) for _ in range(100)]  # 1 micro-batch = 1 step of 4 rows
    before, after = sum(per_step[:80], []), sum(per_step[80:], [])
    assert 2 not in before  # no SFT rows before the anneal stage starts at step 80
    assert abs(after.count(2) / len(after) - 0.45) < 0.17  # 80 rows: sd 0.056; 3 sd
    shares = s.observed_shares()
    assert set(shares) == {"fast", "stable", "anneal"} and shares["fast"]["sft"] == 0
    assert shares["anneal"]["sft"] > 0.25 and 0 < shares["stable"]["old"] < 0.25


def test_rows_do_not_depend_on_micro_batch_accumulation_or_ranks():
    one = stream({"a": 1.0, "b": 2.0}, batch=4, rows_per_step=4)
    micro = stream({"a": 1.0, "b": 2.0}, batch=1, rows_per_step=4)
    ranks = [stream({"a": 1.0, "b": 2.0}, batch=2, rows_per_step=4, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(20):
        big = one.next_batch()
        small = torch.cat([micro.next_batch()["input_ids"] for _ in range(4)])
        split = torch.cat([r.next_batch()["input_ids"] for r in ranks])
        assert torch.equal(big["input_ids"], small) and torch.equal(big["input_ids"], split)


def test_resume_continues_the_same_rows_and_epochs_reshuffle():
    s = stream({"a": 1.0, "b": 1.0})
    for _ in range(60):  # past one epoch of each 99-window source
        s.next_batch()
    state = json.loads(json.dumps(s.state_dict()))  # it is stored as JSON-able data
    expected = [s.next_batch()["input_ids"] for _ in range(5)]
    fresh = stream({"a": 1.0, "b": 1.0})
    fresh.load_state_dict(state)
    assert all(torch.equal(fresh.next_batch()["input_ids"], e) for e in expected)
    w = s.sources[0]
    assert sorted(w.order(0)) == sorted(w.order(1)) and not np.array_equal(w.order(0), w.order(1))


def test_resume_with_other_data_is_a_clear_error():
    state = stream({"a": 1.0, "b": 1.0}).state_dict()
    with pytest.raises(DataError, match="same data sources"):
        stream({"a": 1.0, "c": 1.0}).load_state_dict(state)


def test_bad_stage_configs_name_the_problem():
    configs = [SourceConfig(path="web.jsonl"), SourceConfig(path="books.jsonl")]
    with pytest.raises(ConfigError, match="did you mean 'books'"):
        plan_mixture(configs, None, [MixtureStage(name="s", weights={"bookz": 1})], 10)
    with pytest.raises(ConfigError, match="not a phase of the LR schedule"):
        stages = [MixtureStage(name="a", weights={"web": 1}), MixtureStage(name="b", start_phase="decay", weights={"web": 1})]
        plan_mixture(configs, None, stages, 10, {"warmup": 0, "cosine": 2})
    with pytest.raises(ConfigError, match="increasing steps"):
        stages = [MixtureStage(name="a", weights={"web": 1}), MixtureStage(name="b", start_step=0, weights={"web": 1})]
        plan_mixture(configs, None, stages, 10)
    with pytest.raises(ConfigError, match="distinct `name:`"):
        plan_mixture([SourceConfig(path="a/x.jsonl"), SourceConfig(path="b/x.jsonl")], None, [], 10)
    with pytest.raises(ConfigError, match="replay.fraction sets its share"):
        replay = ReplayConfig(sources=[SourceConfig(path="old.jsonl")])
        plan_mixture(configs, replay, [MixtureStage(name="s", weights={"old": 1})], 10)


def test_resume_with_another_global_batch_or_seed_is_a_clear_error():
    state = stream({"a": 1.0, "b": 1.0}, batch=4, rows_per_step=4).state_dict()
    with pytest.raises(DataError, match="resume with the same global batch"):
        stream({"a": 1.0, "b": 1.0}, batch=4, rows_per_step=8).load_state_dict(state)
    state["seed"] = 99
    with pytest.raises(DataError, match="train.seed=99"):
        stream({"a": 1.0, "b": 1.0}).load_state_dict(state)


def test_observed_shares_survive_a_resume():
    s = stream({"a": 1.0, "b": 3.0})
    for _ in range(10):
        s.next_batch()
    fresh = stream({"a": 1.0, "b": 3.0})
    fresh.load_state_dict(json.loads(json.dumps(s.state_dict())))
    for _ in range(10):
        s.next_batch()
        fresh.next_batch()
    assert fresh.observed_shares() == s.observed_shares() and sum(s.per_stage["main"]) == 80


def test_a_stage_that_would_never_run_is_an_error():
    configs = [SourceConfig(path="web.jsonl")]
    stages = [MixtureStage(name="a", weights={"web": 1}), MixtureStage(name="late", start_fraction=0.999, weights={"web": 1})]
    with pytest.raises(ConfigError, match="late starts at step 500, at or after max_steps=500"):
        plan_mixture(configs, None, stages, 500)
