"""The forwards online RL skips when they cannot change the update: the old policy's on an on-policy
rollout (old log-probs = the training forward's, detached) and the reference's at kl.coef = 0."""

from __future__ import annotations

import json
import math

import pytest
import torch

from chatforge.rl.config import KLConfig, RolloutConfig, skips_old_forward
from test_rl_stage import _config, _weights, killed_then_resumed

# 4 prompts x 2 samples = 8 rows; 4 x 2 micro-batches = one optimizer step of 8 rows; one epoch
ON_POLICY = {"rollout.epochs": 1, "train.micro_batch_size": 4, "train.grad_accum_steps": 2, "data.val_sources": []}


def _base_weights(base_dir):
    from safetensors.torch import load_file

    return load_file(str(base_dir / "model.safetensors"))


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _train(module, cfg):
    """Train with the stage's object kept, so the test can look at its rollout Batches."""
    from chatforge.stages._training import train

    stage = module.GRPOStage() if hasattr(module, "GRPOStage") else module.PPOStage()
    summary = train(cfg, stage)
    return stage.batches, summary


@pytest.fixture
def old_forwards(monkeypatch):
    """Counts the rollout-time old-policy forwards (`objective.forward`) of GRPO and PPO."""
    from chatforge.rl.objectives import PolicyGradientObjective, PPOObjective

    calls = {"n": 0}
    for cls in (PolicyGradientObjective, PPOObjective):
        original = cls.forward

        def counted(self, *args, _original=original, **kwargs):
            calls["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "forward", counted)
    return calls


def test_which_rollouts_skip_the_old_forward():
    rollout = RolloutConfig(prompts_per_rollout=4, samples_per_prompt=2, epochs=1)
    loss_kl = KLConfig(coef=0.04, estimator="k3", in_reward=False)
    assert skips_old_forward(rollout, loss_kl, 8, critic_free=True)
    assert not skips_old_forward(rollout, loss_kl, 8, critic_free=False)  # PPO: the critic's values
    assert not skips_old_forward(rollout, loss_kl, 4, critic_free=True)  # two optimizer steps per rollout
    assert not skips_old_forward(rollout.model_copy(update={"epochs": 2}), loss_kl, 8, critic_free=True)
    assert not skips_old_forward(rollout.model_copy(update={"old_logprobs": "recompute"}), loss_kl, 8, critic_free=True)
    assert not skips_old_forward(rollout, KLConfig(coef=0.04, in_reward=True), 8, critic_free=True)  # KL in the reward
    assert skips_old_forward(rollout, KLConfig(coef=0.0, in_reward=True), 8, critic_free=True)  # ... weighted 0
    adaptive = KLConfig(coef=0.04, in_reward=False, adaptive={"target": 1.0, "horizon": 10})
    assert not skips_old_forward(rollout, adaptive, 8, critic_free=True)  # β's update needs the rollout's KL


def test_on_policy_update_equals_the_one_with_the_old_forward(tmp_path, world, base_dir, monkeypatch, old_forwards):
    """Two GRPO steps (two rollouts, each one epoch in one optimizer step, β = 0.04 with k3 as a loss):
    skipping the old-policy forward gives the weights and losses of running it, with every ratio exactly
    1; the second rollout's sampler check and KL, now taken from the sampler, agree with the forward's."""
    import chatforge.rl.objectives as objectives
    from chatforge.stages import grpo

    ratios: list[torch.Tensor] = []
    original = objectives.clipped_surrogate

    def spy(logp, old_logp, *args, **kwargs):
        out = original(logp, old_logp, *args, **kwargs)
        ratios.append(out.ratio)
        return out

    monkeypatch.setattr(objectives, "clipped_surrogate", spy)
    runs = {}
    for mode in ("auto", "recompute"):
        old_forwards["n"] = 0
        ratios.clear()
        out = tmp_path / mode
        batches, _ = _train(grpo, _config(grpo, world, base_dir, out, **ON_POLICY, **{"train.max_steps": 2, "rollout.old_logprobs": mode}))
        steps = [r for r in _read(out / "metrics.jsonl") if "loss" in r]
        runs[mode] = {"forwards": old_forwards["n"], "on_policy": batches.on_policy, "buffer": set(batches.buffer),
                      "ratios": list(ratios), "steps": steps, "rollouts": _read(out / "rollouts.jsonl"), "weights": _weights(out)}
    auto, always = runs["auto"], runs["recompute"]
    assert auto["on_policy"] and auto["forwards"] == 0 and "old_logp" not in auto["buffer"]
    assert not always["on_policy"] and always["forwards"] == 2 and "old_logp" in always["buffer"]  # one per rollout
    assert len(auto["ratios"]) == 4  # 2 steps x 2 micro-batches
    for ratio in auto["ratios"]:
        assert torch.equal(ratio, torch.ones_like(ratio))
    for a, b in zip(auto["steps"], always["steps"]):
        assert a["clip_fraction"] == 0.0 and a["approx_kl_old"] == 0.0
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    start = _base_weights(base_dir)
    assert max(float((auto["weights"][k] - start[k]).abs().max()) for k in start) > 1e-4  # the steps moved it
    for key, value in always["weights"].items():
        torch.testing.assert_close(auto["weights"][key], value, atol=1e-6, rtol=0)
    # the sampler's log-probs are the training forward's (second rollout: sampled from the updated weights)
    assert auto["steps"][1]["sampler_logp_gap"] < 1e-4
    assert math.isnan(auto["rollouts"][1]["sampler_logp_gap"]) and always["rollouts"][1]["sampler_logp_gap"] < 1e-4
    assert auto["rollouts"][1]["kl"] == pytest.approx(always["rollouts"][1]["kl"], abs=1e-4)
    assert math.isfinite(auto["rollouts"][1]["entropy"]) and auto["rollouts"][1]["entropy"] > 0


@pytest.mark.parametrize("over", [
    {"rollout.epochs": 2},  # two PPO epochs over the rollout
    {"train.micro_batch_size": 2},  # two optimizer steps (minibatches) per rollout
    {"loss.advantage": "rloo", "kl.in_reward": True, "kl.estimator": "k1"},  # the reward needs the policy's KL
    {"kl.adaptive": {"target": 1.0, "horizon": 10}},  # β's update needs the rollout's KL
])
@pytest.mark.parametrize("source", ["auto", "recompute"])
def test_off_policy_rollouts_take_the_sampler_or_the_old_forward(tmp_path, world, base_dir, old_forwards, over, source):
    """Not on-policy, the buffer needs old log-probs: auto takes the sampler's (T = 1, torch backend, float32:
    exact), running no old forward; recompute runs it once per rollout."""
    from chatforge.stages import grpo

    cfg = _config(grpo, world, base_dir, tmp_path / "run", **{**ON_POLICY, "train.max_steps": 1, "rollout.old_logprobs": source, **over})
    batches, _ = _train(grpo, cfg)
    assert not batches.on_policy and "old_logp" in batches.buffer and "sampler_logp" not in batches.buffer
    assert batches.old_logp_source == ("sampler" if source == "auto" else "recompute")
    assert old_forwards["n"] == (0 if source == "auto" else 1)


@pytest.mark.parametrize("stage", ["grpo", "ppo"])
def test_beta_zero_keeps_no_reference(tmp_path, world, base_dir, stage):
    """kl.coef = 0 and no adaptive KL: no reference is built or run, the KL metrics are absent or NaN
    (not 0), and the update equals the one with a reference weighted 1e-12 (two epochs, so the policy
    has moved from the reference when the second pass runs)."""
    import importlib

    from transformers import AutoModelForCausalLM

    from chatforge.rl.setup import frozen_reference

    module = importlib.import_module(f"chatforge.stages.{stage}")
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    cfg = _config(module, world, base_dir, tmp_path / "beta0", **{"kl.coef": 0.0, "train.max_steps": 4, "data.max_val_prompts": 2})
    assert frozen_reference(cfg, model, torch.device("cpu")) is None
    adaptive = _config(module, world, base_dir, tmp_path / "x", **{"kl.coef": 0.0, "kl.adaptive": {"target": 1.0, "horizon": 10}})
    assert frozen_reference(adaptive, model, torch.device("cpu")) is not None  # β may grow from 0

    batches, summary = _train(module, cfg)
    assert batches.reference is None and not batches.uses_reference
    assert "ref_logp" not in batches.buffer and "kl" not in batches.buffer
    steps = [r for r in _read(tmp_path / "beta0" / "metrics.jsonl") if "loss" in r]
    assert len(steps) == 4 and all("kl/policy_ref_token" not in r and "kl/sequence" not in r for r in steps)
    assert math.isnan(_read(tmp_path / "beta0" / "rollouts.jsonl")[0]["kl"])
    assert math.isnan(summary["eval"]["final"]["eval/kl"]) and math.isfinite(summary["eval"]["final"]["eval/gold"])

    tiny = _config(module, world, base_dir, tmp_path / "tiny", **{"kl.coef": 1e-12, "train.max_steps": 4, "data.val_sources": []})
    with_reference, _ = _train(module, tiny)
    assert with_reference.uses_reference and "ref_logp" in with_reference.buffer
    a, b = _weights(tmp_path / "beta0"), _weights(tmp_path / "tiny")
    start = _base_weights(base_dir)
    moved = max(float((a[k] - start[k]).abs().max()) for k in a)
    assert moved > 1e-4
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)


def test_on_policy_run_without_reference_resumes_exactly(tmp_path, world, base_dir, monkeypatch):
    """The buffer of an on-policy, reference-free run (no old_logp, no ref_logp, the sampler's log-probs)
    goes through a checkpoint: killed inside step 2 and resumed, it ends where an uninterrupted run does."""
    from chatforge.stages import grpo

    over = {**ON_POLICY, "kl.coef": 0.0, "train.max_steps": 3, "train.save_every": 1}
    whole = tmp_path / "whole"
    grpo.run(_config(grpo, world, base_dir, whole, **over))
    crashed = tmp_path / "crashed"
    # killed in step 2's second micro-batch (the 4th)
    killed_then_resumed(grpo.run, lambda: _config(grpo, world, base_dir, crashed, **over), monkeypatch,
                        kill_at=4, latest="step_000001")
    a, b = _weights(whole), _weights(crashed)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    losses = [{r["step"]: r["loss"] for r in _read(run / "metrics.jsonl") if "loss" in r} for run in (whole, crashed)]
    assert losses[0] == losses[1] and len(losses[0]) == 3


@pytest.mark.parametrize(("sampling", "estimated"), [
    ({}, True),  # draws from the raw policy: mean −log p estimates its entropy
    ({"logit_bias": {5: 8.0}}, False),  # token 5 drawn far more often than the policy says
    ({"top_k": 4}, False),
])
def test_on_policy_entropy_is_estimated_only_from_draws_of_the_raw_policy(tmp_path, world, base_dir, sampling, estimated):
    """Without the old forward the rollout's entropy is the sampled tokens' mean −log p; a logit bias
    (like a filter) skews the draws away from the policy, so the estimate is NaN rather than wrong."""
    from chatforge.stages import grpo

    over = {**ON_POLICY, "train.max_steps": 1, **{f"rollout.sampling.{k}": v for k, v in sampling.items()}}
    batches, _ = _train(grpo, _config(grpo, world, base_dir, tmp_path / "run", **over))
    assert batches.on_policy
    entropy = _read(tmp_path / "run" / "rollouts.jsonl")[0]["entropy"]
    assert (math.isfinite(entropy) and entropy > 0) if estimated else math.isnan(entropy)
    assert ("entropy" in batches.buffer) == estimated
