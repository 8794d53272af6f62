"""The old policy's log-probs taken from the sampler (`rollout.old_logprobs`): they equal a forward's,
`auto` takes them only where they do, `sampler` is refused where they do not, and the updates of RLOO
(KL in the reward), GRPO over two epochs and PPO do not change (tolerances stated in each test)."""

from __future__ import annotations

import json

import pytest
import torch

from chatforge.config.load import validate_config
from chatforge.errors import ConfigError
from chatforge.rl.config import KLConfig, RolloutConfig, old_logprobs_source
from chatforge.sampling.config import SamplingConfig
from test_rl_stage import _config, _weights


def _rows(prompts: list[list[int]], completions) -> tuple[torch.Tensor, ...]:
    """The rollout's layout: [prompt][response][padding], right padded; the sampler's log-probs at the
    positions that predict response tokens."""
    seqs = [(p, c) for p, group in zip(prompts, completions) for c in group]
    width = max(len(p) + len(c.token_ids) for p, c in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    act = torch.zeros((len(seqs), width - 1))
    sampled = torch.zeros_like(act)
    for r, (p, c) in enumerate(seqs):
        row = p + list(c.token_ids)
        ids[r, : len(row)], mask[r, : len(row)] = torch.tensor(row), 1
        act[r, len(p) - 1 : len(row) - 1] = 1.0
        sampled[r, len(p) - 1 : len(row) - 1] = torch.tensor(c.logprobs)
    return ids, mask, act, sampled


@pytest.mark.parametrize("decode", ["fast", "transformers"])
@pytest.mark.parametrize("filters", [{}, {"top_p": 0.8}, {"top_k": 5, "repetition_penalty": 1.3, "logit_bias": {7: 3.0}}])
def test_sampler_logprobs_equal_a_forward(base_dir, decode, filters):
    """Prompts of 2, 6 and 13 tokens decoded together (left padded in the sampler, right padded in the
    forward), 3 samples each, responses of 1 to 12 tokens (a fifth of the vocabulary stops a sample):
    the sampler's recorded log-probs and a float32 forward's differ by less than 1e-4 at every response
    token. Filters, penalties and a logit bias change which token is drawn, not its recorded raw log-prob,
    which is what the objective's forward computes (before any filter)."""
    from transformers import AutoModelForCausalLM

    from chatforge.rl.forward import response_outputs
    from chatforge.sampling.sampler import Sampler
    from chatforge.tokenizer.load import load_tokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir).float()
    tokenizer = load_tokenizer(base_dir)
    prompts = [[1 + (7 * i) % 300 for i in range(n)] for n in (2, 6, 13)]
    cfg = SamplingConfig(n=3, max_new_tokens=12, seed=3, decode=decode, stop_token_ids=list(range(100, 180)), **filters)
    completions = Sampler(model, tokenizer).generate(prompts, cfg)
    ids, mask, act, sampled = _rows(prompts, completions)
    lengths = act.sum(1)
    assert len(set(lengths.tolist())) >= 3 and lengths.min() >= 1  # several response lengths
    model.eval()
    with torch.inference_mode():
        logp, _, _ = response_outputs(model, ids, mask, act, 1.0, with_entropy=False)
    gap = float(((sampled - logp).abs() * act).max())
    assert gap < 1e-4, gap
    assert float((logp * act).abs().sum()) > 1.0  # not all zeros


def test_auto_takes_the_sampler_only_where_it_is_exact():
    loss_kl = KLConfig(coef=0.04, estimator="k3", in_reward=False)
    reward_kl = KLConfig(coef=0.04, estimator="k1", in_reward=True)

    def source(kl=reward_kl, rows_per_step=8, critic_free=True, dtype=torch.float32, **rollout):
        cfg = RolloutConfig(prompts_per_rollout=4, samples_per_prompt=2, **rollout)
        return old_logprobs_source(cfg, kl, rows_per_step, critic_free, dtype)

    assert source(kl=loss_kl) == "training"  # on-policy: no old log-probs needed at all
    assert source() == "sampler"  # RLOO's KL in the reward: the sampler's
    assert source(kl=loss_kl, epochs=2) == "sampler"  # GRPO over two epochs
    assert source(kl=loss_kl, critic_free=False) == "sampler"  # PPO (its critic still runs)
    assert source(sampling={"top_p": 0.9, "max_new_tokens": 8}) == "sampler"  # raw log-probs: filters do not matter
    assert source(sampling={"temperature": 0.7, "max_new_tokens": 8}) == "recompute"  # the objective's are at T = 0.7
    assert source(sampling={"temperature": 0.7, "max_new_tokens": 8}, kl=loss_kl) == "training"  # on-policy: any T
    assert source(sampling={"backend": "vllm"}) == "recompute"
    assert source(dtype=torch.bfloat16) == "recompute"  # a bf16 decode agrees with a forward to ~1e-2 only
    assert source(old_logprobs="recompute", kl=loss_kl) == "recompute"
    assert source(old_logprobs="sampler", kl=loss_kl) == "sampler"  # asked for by name: not the on-policy path


@pytest.mark.parametrize(("sampling", "named"), [
    ({"temperature": 0.7}, "sampling.temperature=0.7"), ({"backend": "vllm"}, "sampling.backend=vllm"),
])
def test_sampler_logprobs_refused_where_inexact(sampling, named):
    with pytest.raises(ConfigError, match=r"rollout.*old_logprobs=sampler: " + named.replace(".", r"\.")):
        validate_config(RolloutConfig, {"old_logprobs": "sampler", "sampling": sampling})
    with pytest.raises(ConfigError, match="old_logprobs"):  # the old switch's name points to the new one
        validate_config(RolloutConfig, {"old_logp_forward": "always"})


TWO_EPOCHS = {"rollout.epochs": 2, "train.micro_batch_size": 4}


@pytest.fixture
def old_forwards(monkeypatch):
    """Counts the old-policy forwards (`objective.forward`) and PPO's values-only forwards."""
    from chatforge.rl.objectives import PolicyGradientObjective, PPOObjective

    calls = {"forward": 0, "rollout_values": 0}
    for cls, name in ((PolicyGradientObjective, "forward"), (PPOObjective, "forward"), (PPOObjective, "rollout_values")):
        original = getattr(cls, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, counted)
    return calls


def _run(module, cfg):
    from chatforge.stages._training import train

    stage = module.GRPOStage() if hasattr(module, "GRPOStage") else module.PPOStage()
    train(cfg, stage)
    out = cfg.out
    read = lambda name: [json.loads(line) for line in open(f"{out}/{name}").read().splitlines()]  # noqa: E731
    return stage.batches, [r for r in read("metrics.jsonl") if "loss" in r], read("rollouts.jsonl")


@pytest.mark.parametrize(("stage", "over"), [
    ("grpo", {"loss.advantage": "rloo", "kl.in_reward": True, "kl.estimator": "k1"}),  # RLOO as the bench runs it
    ("grpo", TWO_EPOCHS),  # GRPO, two epochs: the second pass's ratio is against the sampler's
    ("grpo", {"kl.adaptive": {"target": 0.01, "horizon": 10}}),  # β's update from the sampler's KL
    ("ppo", TWO_EPOCHS),  # PPO, shared critic: values from the backbone alone
    ("ppo", {**TWO_EPOCHS, "critic": "separate"}),  # separate critic: the actor's forward skipped
])
def test_update_with_the_samplers_logprobs_equals_the_recomputed_one(tmp_path, world, base_dir, old_forwards, stage, over):
    """Two rollouts of 8 rows, each two optimizer steps (one epoch of two steps of 4 rows, or two epochs
    of one step of 8), the second sampled from the updated weights: old log-probs from the sampler
    (no old-policy forward) give the recomputed run's losses (abs 1e-5), rollout KL and β (abs 1e-5) and
    weights (abs 1e-5; the starting weights move by more than 1e-3)."""
    import importlib

    from safetensors.torch import load_file

    module = importlib.import_module(f"chatforge.stages.{stage}")
    runs = {}
    for source in ("auto", "recompute"):
        for key in old_forwards:
            old_forwards[key] = 0
        over_all = {"rollout.epochs": 1, "train.micro_batch_size": 2, "train.grad_accum_steps": 2, "data.val_sources": [],
                    "train.max_steps": 4, "train.save_every": 4, "rollout.old_logprobs": source, **over}
        cfg = _config(module, world, base_dir, tmp_path / source, **over_all)
        batches, steps, rollouts = _run(module, cfg)
        runs[source] = {"batches": batches, "steps": steps, "rollouts": rollouts, "calls": dict(old_forwards),
                        "weights": _weights(tmp_path / source)}
    sampler, recompute = runs["auto"], runs["recompute"]
    assert sampler["batches"].old_logp_source == "sampler" and sampler["calls"]["forward"] == 0
    assert recompute["batches"].old_logp_source == "recompute" and recompute["calls"]["forward"] == 2  # one per rollout
    assert sampler["calls"]["rollout_values"] == (2 if stage == "ppo" else 0) and recompute["calls"]["rollout_values"] == 0
    assert len(sampler["steps"]) == len(recompute["steps"]) == 4
    for a, b in zip(sampler["steps"], recompute["steps"]):
        for key in ("loss", "loss/policy", "approx_kl_old", "clip_fraction"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
    assert abs(sampler["steps"][0]["approx_kl_old"]) < 1e-6  # the sampler check: first step, ratio 1
    for a, b in zip(sampler["rollouts"], recompute["rollouts"]):
        assert a["kl"] == pytest.approx(b["kl"], abs=1e-5) and a["beta"] == pytest.approx(b["beta"], abs=1e-7)
    start = load_file(str(base_dir / "model.safetensors"))
    assert max(float((sampler["weights"][k] - start[k]).abs().max()) for k in start) > 1e-3
    for key, value in recompute["weights"].items():
        torch.testing.assert_close(sampler["weights"][key], value, atol=1e-5, rtol=0)


def test_the_first_step_of_a_rollout_checks_the_sampler(tmp_path, world, base_dir, monkeypatch):
    """With old log-probs from the sampler no forward checks them at rollout time; the first step of each
    rollout does (`sampler_logp_gap`, the update's forward against the sampler). A sampler left on the
    starting weights (the stale-decoder bug this check once found) shows there: > 1e-2 nats per token
    at the second rollout, against < 1e-4 when it samples the weights being trained."""
    import copy

    from chatforge.rl.rollout import RolloutBatches
    from chatforge.stages import grpo

    over = {"rollout.epochs": 2, "train.micro_batch_size": 4, "train.grad_accum_steps": 2, "data.val_sources": [],
            "train.max_steps": 4, "train.save_every": 4}
    gaps = {}
    frozen: dict = {}
    for name in ("fresh", "stale"):
        if name == "stale":

            def stale(self):
                frozen.setdefault("model", copy.deepcopy(self.model))  # the weights at the first rollout
                return frozen["model"]

            monkeypatch.setattr(RolloutBatches, "generator_model", stale)
        batches, steps, _ = _run(grpo, _config(grpo, world, base_dir, tmp_path / name, **over))
        assert batches.old_logp_source == "sampler"
        gaps[name] = {s["step"]: s["sampler_logp_gap"] for s in steps if "sampler_logp_gap" in s}
    assert sorted(gaps["fresh"]) == sorted(gaps["stale"]) == [1, 3]  # the first step of each of the 2 rollouts
    assert gaps["fresh"][1] < 1e-4 and gaps["fresh"][3] < 1e-4 and gaps["stale"][1] < 1e-4
    assert gaps["stale"][3] > 1e-2
