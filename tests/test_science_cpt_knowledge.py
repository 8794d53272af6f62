"""examples/science/cpt_knowledge.py: the seed pooling and table against hand-computed values, and the
runs it plans are valid `chatforge pretrain` configs with the step accounting docs/science.md states."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "science"))

import cpt_knowledge as ck  # noqa: E402

from chatforge.config.load import load_config  # noqa: E402
from chatforge.stages.pretrain import Config  # noqa: E402


def summary(a_k: float, b_k: float, a_bpb: float, b_bpb: float) -> dict:
    return {"domains": {"world_a": {"after": {"knowledge_acc": a_k, "bpb": a_bpb}},
                        "world_b": {"after": {"knowledge_acc": b_k, "bpb": b_bpb}}}}


def test_pooled_is_mean_and_standard_error_over_seeds():
    # two seeds: mean of (0.5, 0.7) = 0.6; SE = stdev / sqrt(2) = 0.141421 / 1.414214 = 0.1
    p = ck.pooled([summary(0.5, 0.8, 1.5, 1.0), summary(0.7, 0.9, 1.7, 1.2)])
    assert p["a_knowledge"] == pytest.approx((0.6, 0.1, 2))
    assert p["b_knowledge"] == pytest.approx((0.85, 0.05, 2))
    assert p["a_bpb"] == pytest.approx((1.6, 0.1, 2))
    assert p["b_bpb"] == pytest.approx((1.1, 0.1, 2))
    # one seed: no standard error
    assert ck.pooled([summary(0.5, 0.8, 1.5, 1.0)])["a_knowledge"] == (0.5, 0.0, 1)


def test_table_rows_hand_computed():
    start = summary(0.9, 0.25, 1.0, 3.0)
    rows = ck.table_rows(start, {
        "rewarm": [summary(0.5, 0.8, 1.5, 1.0), summary(0.7, 0.9, 1.7, 1.2)],
        "rewarm + EWC": [],  # every seed failed: no row
        "retrain on A ∪ B (from scratch)": [summary(0.95, 0.6, 0.9, 1.4)],
    }, base_steps=800, cpt_steps=400)
    assert rows == [
        ["start: world-A model", "1", "0.900", "", "0.250", "1.0000", "3.0000", "800"],
        # knowledge lost = 0.9 - (0.5, 0.7) = (0.4, 0.2): 0.3 ± 0.1
        ["rewarm", "2", "0.600 ± 0.100", "0.300 ± 0.100", "0.850 ± 0.050", "1.6000 ± 0.1000", "1.1000 ± 0.1000", "400"],
        # retraining pays the start run's steps again: 800 + 400
        ["retrain on A ∪ B (from scratch)", "1", "0.950", "-0.050", "0.600", "0.9000", "1.4000", "1200"],
    ]
    assert len(rows[0]) == len(ck.HEADER)


def test_regimes_set_what_docs_science_says():
    data = Path("/w/data")
    constant = ck.cpt_overrides("constant LR (no re-warm)", data, 0.05, 1e4)
    assert "optim.lr=0.0003" in constant and "min_lr_ratio: 1.0" in constant[0]
    replay = ck.cpt_overrides("rewarm + replay", data, 0.05, 1e4)
    assert replay[1].endswith("fraction: 0.05}") and "world_a_qa_replay" in replay[1]
    with pytest.raises(ValueError, match="unknown regime"):
        ck.cpt_overrides("nothing", data, 0.05, 1e4)


def test_planned_runs_are_valid_pretrain_configs(tmp_path):
    args = SimpleNamespace(out=tmp_path, device="cpu", precision="fp32", seeds=[0, 1], base_steps=800,
                           cpt_steps=400, max_questions=None, replay=0.05, ewc=1e4,
                           regimes=[ck.slug(r) for r in ck.REGIMES])
    start, unions, cpts = ck.plan(args, tmp_path / "data")
    assert len(unions) == 2 and len(cpts) == 10  # 5 CPT regimes x 2 seeds
    configs = {job.out.name: load_config(Config, ck.CONFIG, job.overrides) for job in [start, *unions, *cpts]}
    assert configs["start_800"].train.max_steps == 800 and configs["start_800"].init_from is None
    union = configs["union_1200_s1"]
    assert union.train.max_steps == 1200 and union.train.seed == 1 and union.init_from is None
    # the union weighs world A's mixture and world B's equally (1.0 each)
    weights = {s.name: s.weight for s in union.data.sources}
    assert sum(w for n, w in weights.items() if n.startswith("world_b")) == pytest.approx(1.0, abs=1e-3)
    assert sum(w for n, w in weights.items() if not n.startswith("world_b")) == pytest.approx(1.0)
    ewc = configs["ewc_800+400_s0"]
    assert ewc.init_from == str(tmp_path / "start_800" / "final") and ewc.ewc.weight == 1e4
    assert ewc.train.max_steps == 400 and ewc.schedule.warmup_steps == 20
    assert configs["replay_800+400_s1"].data.replay.fraction == 0.05
    assert configs["constant_800+400_s0"].optim.lr == pytest.approx(3e-4)
    lora = configs["lora_800+400_s1"]
    assert lora.mode == "lora" and lora.lora.r == 8 and lora.schedule.warmup_steps == 20
    for cfg in configs.values():
        assert [d.knowledge.subject for d in cfg.domains] == ["world_a", "world_b"]
        assert all(d.knowledge.max_questions is None and d.knowledge.method == "option" for d in cfg.domains)


def test_a_subset_of_regimes_plans_only_those_runs(tmp_path):
    args = SimpleNamespace(out=tmp_path, device="cpu", precision="fp32", seeds=[0, 1], base_steps=800,
                           cpt_steps=200, max_questions=None, replay=0.05, ewc=1e4, regimes=["rewarm", "lora"])
    start, unions, cpts = ck.plan(args, tmp_path / "data")
    assert unions == [] and sorted(job.out.name for job in cpts) == [
        "lora_800+200_s0", "lora_800+200_s1", "rewarm_800+200_s0", "rewarm_800+200_s1"]
