"""PPO / GRPO / RLOO stages end to end on a tiny model: split invariance, exact resume after a crash,
the LoRA reference, diagnostics files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chatforge.config.load import validate_config


def length_reward(prompt, response) -> float:
    """A proxy that varies between samples (a random tiny model earns the same gold reward everywhere)."""
    return len(response) / 10.0


PROXY = {"kind": "function", "path": "test_rl_stage:length_reward"}


def _config(module, world, base_dir, out, **over):
    cfg = {
        "out": str(out), "model": str(base_dir),
        "data": {"sources": [{"path": str(world / "verifiable/train.jsonl")}], "val_sources": [{"path": str(world / "verifiable/test.jsonl")}],
                 "max_val_prompts": 3},
        "rollout": {"prompts_per_rollout": 4, "samples_per_prompt": 2, "epochs": 2, "sampling": {"max_new_tokens": 6}},
        "train": {"max_steps": 2, "micro_batch_size": 2, "grad_accum_steps": 2, "eval_every": 0, "save_every": 2, "progress": False},
        "optim": {"lr": 1e-3},
        "eval": {"samples": 2, "greedy": False, "sampling": {"max_new_tokens": 6}},
        "diagnostics": {"samples_every": 1},
        "reward": {"scorer": PROXY},
    }
    for key, value in over.items():
        node = cfg
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return validate_config(module.Config, cfg)


def _weights(run_dir):
    return load_file(str(run_dir / "final" / "model.safetensors"))


PTX = {"sources": [{"path": "WORLD/pretrain/world_a_train.jsonl"}], "coef": 0.5, "rows_per_step": 4, "seq_len": 16}


@pytest.mark.parametrize("stage,extra", [
    ("ppo", {}), ("ppo", {"ptx": PTX, "critic": "separate"}), ("grpo", {"loss.loss_aggregation": "token"}),
    ("grpo", {"loss.advantage": "rloo"}),
])
def test_splitting_a_step_does_not_change_the_update(tmp_path, world, base_dir, stage, extra):
    """One optimizer step of 4 rows as 1 x 4, 2 x 2 and 4 x 1 micro-batches gives the same weights:
    the token losses are summed and divided by the step's global count of valid tokens."""
    import importlib

    module = importlib.import_module(f"chatforge.stages.{stage}")
    if "ptx" in extra:
        ptx = dict(extra["ptx"], cache_dir=str(tmp_path / "cache"))
        ptx["sources"] = [{"path": ptx["sources"][0]["path"].replace("WORLD", str(world))}]
        extra = {**extra, "ptx": ptx}
    results = []
    for micro, accum in ((4, 1), (2, 2), (1, 4)):
        out = tmp_path / f"{micro}x{accum}"
        cfg = _config(module, world, base_dir, out, **{"train.max_steps": 1, "train.micro_batch_size": micro,
                                                       "train.grad_accum_steps": accum, "data.val_sources": [], **extra})
        module.run(cfg)
        results.append(_weights(out))
    if "ptx" in extra:  # the step's loss is the PPO token mean + γ × the pretraining windows' mean NLL
        row = [json.loads(line) for line in (tmp_path / "4x1" / "metrics.jsonl").read_text().splitlines() if '"loss"' in line][0]
        assert row["loss/ptx"] > 1.0
        expected = row["loss/policy"] + 0.5 * row["loss/value"] + 0.5 * row["loss/ptx"]
        assert row["loss"] == pytest.approx(expected, rel=1e-5)
    start = load_file(str(base_dir / "model.safetensors"))
    moved = max(float((results[0][k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-5  # the step did something
    for other in results[1:]:
        for key, value in results[0].items():
            torch.testing.assert_close(other[key], value, atol=2e-6, rtol=0)


class _Killed(Exception):
    """Stands for kill -9: not a KeyboardInterrupt, so the engine writes no checkpoint on its way out."""


def killed_then_resumed(run, config, monkeypatch, kill_at: int, latest: str):
    """`run(config())` killed (`_Killed`) at its `kill_at`-th `RolloutBatches.next_batch` call, its
    last checkpoint checked to be `latest`, then run again (resuming from it): the resumed run's result."""
    from chatforge.rl.rollout import RolloutBatches

    calls = {"n": 0}
    original = RolloutBatches.next_batch

    def dying(self):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise _Killed()
        return original(self)

    monkeypatch.setattr(RolloutBatches, "next_batch", dying)
    with pytest.raises(_Killed):
        run(config())
    assert (Path(config().out) / "checkpoints" / "latest").read_text().strip() == latest
    monkeypatch.setattr(RolloutBatches, "next_batch", original)
    return run(config())


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, world, base_dir, monkeypatch):
    """PPO with a separate critic (its own LR scale), adaptive KL, running reward normalisation and
    PPO epochs: killed in the middle of step 3 (a rollout buffer half used, last checkpoint at step
    2) and resumed, it ends with the same policy, critic, KL coefficient, rollouts and metrics as a
    run that was never interrupted."""
    from chatforge.stages import ppo

    over = {
        "train.max_steps": 6, "critic": "separate", "critic_lr_scale": 3.0, "reward.normalize": "running",
        "kl.adaptive": {"target": 0.01, "horizon": 10}, "kl.coef": 0.1, "data.val_sources": [],
    }
    whole = tmp_path / "whole"
    ppo.run(_config(ppo, world, base_dir, whole, **over))

    crashed = tmp_path / "crashed"
    # killed in step 3's second micro-batch (the 6th)
    summary = killed_then_resumed(ppo.run, lambda: _config(ppo, world, base_dir, crashed, **over), monkeypatch,
                                  kill_at=6, latest="step_000002")

    for name in ("model.safetensors", "critic.safetensors"):
        a, b = load_file(str(whole / "final" / name)), load_file(str(crashed / "final" / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}:{key} differs after resume"
    timing = ("gen_tokens_per_s", "gen_seconds")

    def rollouts(run):
        return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in (run / "rollouts.jsonl").read_text().splitlines()]

    assert rollouts(whole) == rollouts(crashed)
    assert len(rollouts(whole)) == 2
    assert rollouts(whole)[1]["beta"] != 0.1  # the adaptive coefficient moved and was restored
    # the second batch was sampled from the updated weights (fused AdamW does not bump `_version`, so a
    # decoder that kept its packed weights would sample from the start policy: a gap of ~0.1 nats here).
    # Old log-probs from the sampler: the check is the gap to the first step of each rollout (steps 1 and 5)
    steps = {r["step"]: r for r in map(json.loads, (whole / "metrics.jsonl").read_text().splitlines()) if "loss" in r}
    assert [s for s in steps if "sampler_logp_gap" in steps[s]] == [1, 5]
    assert steps[5]["sampler_logp_gap"] < 1e-4
    ckpt = torch.load(crashed / "checkpoints" / "step_000006" / "trainer_state.pt", weights_only=True)
    assert ckpt["data"]["moments"]["count"] == 16  # the reward normaliser saw both rollout batches once

    def metrics(run):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows if "loss" in r}

    whole_m, crashed_m = metrics(whole), metrics(crashed)
    for step in range(1, 7):
        assert crashed_m[step] == pytest.approx(whole_m[step], abs=1e-9)
    assert summary["rollouts"] == 2


def test_lora_reference_is_the_base_with_adapters_off(tmp_path, world, base_dir):
    """mode=lora: no copy of the model is made; the reference log-probs of the second rollout batch
    (taken after the adapters trained for 4 steps) are the starting model's, while the policy's differ."""
    from transformers import AutoModelForCausalLM

    from chatforge.rl.forward import response_outputs
    from chatforge.rl.setup import frozen_reference
    from chatforge.stages import grpo
    from chatforge.stages._training import train

    cfg = _config(grpo, world, base_dir, tmp_path / "lora", **{
        "mode": "lora", "data.val_sources": [], "optim.lr": 5e-2, "train.max_steps": 5, "train.save_every": 0,
    })
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    assert frozen_reference(cfg, base, torch.device("cpu")) is None
    stage = grpo.GRPOStage()
    train(cfg, stage)
    buffer = stage.batches.buffer
    assert stage.batches.index == 2
    with torch.no_grad():
        expected, _, _ = response_outputs(base, buffer["input_ids"], buffer["attention_mask"], buffer["action_mask"])
    torch.testing.assert_close(buffer["ref_logp"], expected, atol=1e-5, rtol=0)
    assert float((buffer["old_logp"] - buffer["ref_logp"]).abs().max()) > 1e-3  # the adapters changed the policy
    assert json.loads((tmp_path / "lora" / "report" / "summary.json").read_text())["mode"] == "lora"


def test_diagnostics_files_and_held_out_eval(tmp_path, world, base_dir):
    """rollouts.jsonl has one row per rollout batch, samples.md a table, metrics.jsonl the per-step
    diagnostics, and the summary the held-out start/final evaluation with the paired gain."""
    from chatforge.stages import ppo

    out = tmp_path / "diag"
    summary = ppo.run(_config(ppo, world, base_dir, out, **{"train.max_steps": 4, "train.eval_at_start": True}))
    rows = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert [r["rollout"] for r in rows] == [0]
    assert {"proxy", "gold", "kl", "entropy", "length", "beta", "gen_tokens_per_s", "explained_variance"} <= set(rows[0])
    assert "| prompt | response | proxy | gold | kl |" in (out / "samples.md").read_text()
    step_rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in step_rows if "loss" in r][-1]
    for key in ("reward/gold", "reward/proxy", "kl/sequence", "entropy", "clip_fraction", "loss/value", "response_length",
                "rollout/explained_variance", "rollout/gen_tokens_per_s", "tokens_per_s"):
        assert key in last, key
    assert summary["eval"]["start"]["step"] == 0 and summary["eval"]["final"]["step"] == 4
    assert summary["eval"]["start"]["eval/kl"] == pytest.approx(0.0, abs=1e-6)  # the policy is the reference at step 0
    assert summary["gold_gain"]["prompts"] == 3
    assert (out / "report" / "rollouts.png").is_file()


def test_rollout_rows_must_fill_whole_steps(tmp_path, world, base_dir):
    from chatforge.errors import ConfigError
    from chatforge.stages import grpo

    cfg = _config(grpo, world, base_dir, tmp_path / "bad", **{"train.micro_batch_size": 3})
    with pytest.raises(ConfigError, match="does not split into optimizer steps"):
        grpo.run(cfg)


def test_online_dpo_rounds_pairs_and_probes(tmp_path, world, base_dir):
    """Each round's pairs are the best and worst sample of a prompt by the proxy (chosen score above
    rejected by at least min_margin); the DPO metrics and the dynamics probes are written."""
    from chatforge.stages import online_dpo

    out = tmp_path / "odpo"
    cfg = _config(online_dpo, world, base_dir, out, **{
        "train.max_steps": 4, "data.val_sources": [], "min_margin": 0.2,
        "dynamics": {"probes": str(world / "probes/probes.jsonl"), "max_probes": 2, "every": 2, "greedy_max_new_tokens": 4},
    })
    summary = online_dpo.run(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 4
    for r in steps:
        assert r["pairs/chosen_score"] - r["pairs/rejected_score"] >= 0.2 - 1e-6
        assert "rewards/margin" in r
    assert summary["rollouts"] == 2 and summary["dynamics"]["steps"] == [0, 2, 4]
    assert (out / "dynamics.jsonl").is_file()
