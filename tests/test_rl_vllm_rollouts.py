"""Online RL with `rollout.sampling.backend: vllm`: every rollout's vLLM engine holds the policy's current weights.

vLLM needs CUDA, so a fake `vllm` module stands in (sys.modules): its `LLM` reads the safetensors of the
directory it is built from, as the real engine loads its weights, and answers `generate` with objects shaped
like vLLM's RequestOutput. What is checked is chatforge's side: what directory vLLM is given, and when."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chatforge.config.load import validate_config
from chatforge.rl.config import RolloutConfig
from chatforge.rl.rollout_sampler import RolloutSampler, weights_digest
from chatforge.sampling.config import SamplingConfig


def length_reward(prompt, response) -> float:
    """A proxy that varies with the fake engine's sample lengths, so GRPO's advantages are not all 0."""
    return len(response) / 10.0


class FakeLLM:
    built: list[FakeLLM] = []

    def __init__(self, model: str, tokenizer: str, seed: int = 0):
        from transformers import AutoTokenizer

        self.model_dir, self.tokenizer_dir = model, tokenizer
        self.weights = load_file(str(Path(model) / "model.safetensors"))  # what the real engine would load
        self.tok = AutoTokenizer.from_pretrained(tokenizer)
        FakeLLM.built.append(self)

    def generate(self, prompts, params):
        outputs = []
        for p, prompt in enumerate(prompts):
            assert "prompt_token_ids" in prompt
            samples = []
            for i in range(params.n):
                length = 1 + (p + i + params.seed) % params.max_tokens  # lengths differ within a group
                ids = [100 + (p * 7 + i * 3 + k) % 200 for k in range(length)]
                step = [{t: types.SimpleNamespace(logprob=-1.5, rank=1)} for t in ids]
                samples.append(types.SimpleNamespace(token_ids=ids, text=self.tok.decode(ids), logprobs=step,
                                                     finish_reason="length", stop_reason=None))
            outputs.append(types.SimpleNamespace(outputs=samples))
        return outputs


class FakeSamplingParams:
    def __init__(self, **kw):
        self.__dict__.update(kw)


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = FakeLLM, FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.built = []
    return FakeLLM


def _record_sampled_weights(monkeypatch) -> list:
    """The policy's weights at every `RolloutSampler.sampler` call, in order."""
    seen = []
    original = RolloutSampler.sampler

    def recording(self, policy):
        seen.append(_state(policy))
        return original(self, policy)

    monkeypatch.setattr(RolloutSampler, "sampler", recording)
    return seen


def _grpo_config(world, base_dir, out, backend, **extra):
    from chatforge.stages import grpo

    cfg = {
        "out": str(out), "model": str(base_dir),
        "data": {"sources": [{"path": str(world / "verifiable/train.jsonl")}], "val_sources": []},
        # 2 prompts x 2 samples = 4 rows = one optimizer step per rollout: 2 steps, 2 rollouts
        "rollout": {"prompts_per_rollout": 2, "samples_per_prompt": 2, "epochs": 1,
                    "sampling": {"max_new_tokens": 4, "backend": backend}},
        "train": {"max_steps": 2, "micro_batch_size": 2, "grad_accum_steps": 2, "eval_every": 0, "save_every": 0,
                  "progress": False},
        "optim": {"lr": 1e-2},
        "reward": {"scorer": {"kind": "function", "path": "test_rl_vllm_rollouts:length_reward"}, "gold": None},
    }
    return validate_config(grpo.Config, cfg | extra)  # `extra` replaces whole sections


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_loaded(engine: FakeLLM, state: dict[str, torch.Tensor]) -> None:
    assert set(engine.weights) <= set(state) and set(state) - set(engine.weights) <= {"lm_head.weight"}  # tied
    for key, value in engine.weights.items():
        torch.testing.assert_close(value, state[key], atol=0, rtol=0)


def test_each_rollout_after_a_step_samples_from_the_updated_weights(tmp_path, world, base_dir, fake_vllm, monkeypatch):
    from chatforge.stages import grpo

    seen = []  # the policy's weights when each rollout asked for its sampler
    original = RolloutSampler.sampler

    def recording(self, policy):
        seen.append(_state(policy))
        return original(self, policy)

    monkeypatch.setattr(RolloutSampler, "sampler", recording)
    out = tmp_path / "run"
    grpo.run(_grpo_config(world, base_dir, out, "vllm"))

    assert len(seen) == 2 and len(fake_vllm.built) == 2  # the step changed the weights: a second engine
    moved = max(float((seen[1][k] - seen[0][k]).abs().max()) for k in seen[0])
    assert moved > 1e-4
    start = load_file(str(base_dir / "model.safetensors"))
    for key, value in start.items():  # the first rollout's engine holds the initial weights
        torch.testing.assert_close(fake_vllm.built[0].weights[key], value, atol=0, rtol=0)
    for engine, state in zip(fake_vllm.built, seen):
        _assert_loaded(engine, state)
        assert engine.model_dir == engine.tokenizer_dir == str(out / "vllm_policy")
    assert (out / "vllm_policy" / "tokenizer_config.json").exists()
    final = load_file(str(out / "final" / "model.safetensors"))  # the run trained on the fake's samples
    assert max(float((final[k] - seen[1][k]).abs().max()) for k in final) > 1e-4


def test_held_out_evaluation_shares_the_engine_and_reloads_only_on_change(tmp_path, world, base_dir, fake_vllm,
                                                                          monkeypatch):
    """eval.sampling.backend vllm: the evaluation before training and the first rollout see the same weights (one
    engine), the second rollout and the final evaluation each follow a step (one engine each)."""
    from chatforge.stages import grpo

    seen = _record_sampled_weights(monkeypatch)
    data = {"sources": [{"path": str(world / "verifiable/train.jsonl")}],
            "val_sources": [{"path": str(world / "verifiable/test.jsonl")}], "max_val_prompts": 2}
    train = {"max_steps": 2, "micro_batch_size": 2, "grad_accum_steps": 2, "eval_every": 0, "eval_at_start": True,
             "save_every": 0, "progress": False}
    cfg = _grpo_config(world, base_dir, tmp_path / "run", "vllm", data=data, train=train,
                       eval={"samples": 2, "greedy": False, "sampling": {"max_new_tokens": 4, "backend": "vllm"}})
    grpo.run(cfg)

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    changes = [i for i in range(len(seen)) if i == 0 or not same(seen[i], seen[i - 1])]
    assert len(seen) >= 4 and len(changes) < len(seen)  # at least one call found the weights unchanged
    assert len(fake_vllm.built) == len(changes)
    for engine, i in zip(fake_vllm.built, changes):
        _assert_loaded(engine, seen[i])


def _tiny_policy(tokenizer_dir):
    from transformers import AutoTokenizer

    from tiny_models import make_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return make_tiny_model(vocab_size=len(tokenizer)), tokenizer


def test_no_reload_while_the_weights_are_unchanged(tmp_path, tiny_tokenizer_dir, fake_vllm):
    model, tokenizer = _tiny_policy(tiny_tokenizer_dir)
    rollouts = RolloutSampler(tokenizer, "vllm", tmp_path / "vllm_policy")
    cfg = SamplingConfig(backend="vllm", max_new_tokens=3, n=2, seed=0)

    first = rollouts.sampler(model)
    first.generate([[5, 6, 7]], cfg)
    second = rollouts.sampler(model)
    second.generate([[5, 6, 7]], cfg)
    assert second is first and len(fake_vllm.built) == 1 and rollouts.reloads == 1

    version = model.model.embed_tokens.weight._version
    with torch.no_grad():  # an in-place change without a version bump, as fused AdamW makes
        model.model.embed_tokens.weight.data[3, 0] += 0.25
    assert model.model.embed_tokens.weight._version == version
    rollouts.sampler(model).generate([[5, 6, 7]], cfg)
    assert len(fake_vllm.built) == 2 and rollouts.reloads == 2
    _assert_loaded(fake_vllm.built[1], _state(model))
    assert float(fake_vllm.built[1].weights["model.embed_tokens.weight"][3, 0]
                 - fake_vllm.built[0].weights["model.embed_tokens.weight"][3, 0]) == pytest.approx(0.25)


def test_weights_digest_changes_with_one_value(tiny_tokenizer_dir):
    model, _ = _tiny_policy(tiny_tokenizer_dir)
    before = weights_digest(model)
    assert weights_digest(model) == before
    with torch.no_grad():
        model.model.norm.weight[0] += 1e-3
    assert weights_digest(model) != before


def test_torch_backend_is_untouched(tmp_path, tiny_tokenizer_dir, fake_vllm):
    model, tokenizer = _tiny_policy(tiny_tokenizer_dir)
    rollouts = RolloutSampler(tokenizer, "torch", tmp_path / "vllm_policy")
    first, second = rollouts.sampler(model), rollouts.sampler(model)
    assert first is not second and first.model is model and first.model_path is None  # a fresh sampler per rollout
    out = first.generate([[5, 6, 7]], SamplingConfig(max_new_tokens=2, seed=0))
    assert len(out[0][0].token_ids) >= 1
    assert fake_vllm.built == [] and not (tmp_path / "vllm_policy").exists() and rollouts.reloads == 0


def test_old_logprobs_from_vllm_are_still_refused():
    with pytest.raises(ValueError, match="backend=vllm"):
        RolloutConfig(old_logprobs="sampler", sampling=SamplingConfig(backend="vllm", temperature=1.0))


def test_online_dpo_rounds_sample_from_the_updated_weights(tmp_path, world, base_dir, fake_vllm, monkeypatch):
    from chatforge.stages import online_dpo

    seen = _record_sampled_weights(monkeypatch)
    cfg = validate_config(online_dpo.Config, {
        "out": str(tmp_path / "odpo"), "model": str(base_dir), "min_margin": 0.05,
        "data": {"sources": [{"path": str(world / "verifiable/train.jsonl")}], "val_sources": []},
        "rollout": {"prompts_per_rollout": 4, "samples_per_prompt": 2, "sampling": {"max_new_tokens": 4, "backend": "vllm"}},
        "train": {"max_steps": 2, "micro_batch_size": 2, "grad_accum_steps": 2, "eval_every": 0, "save_every": 0,
                  "progress": False},
        "optim": {"lr": 1e-2},
        "reward": {"scorer": {"kind": "function", "path": "test_rl_vllm_rollouts:length_reward"}, "gold": None},
    })
    online_dpo.run(cfg)
    changes = [i for i in range(len(seen)) if i == 0 or any(not torch.equal(seen[i][k], seen[i - 1][k]) for k in seen[i])]
    assert len(changes) >= 2 and len(fake_vllm.built) == len(changes)  # a round after a step: a new engine
    for engine, i in zip(fake_vllm.built, changes):
        _assert_loaded(engine, seen[i])


def test_a_lora_policy_is_refused_with_the_reason(tmp_path, tiny_tokenizer_dir, fake_vllm):
    from peft import LoraConfig, get_peft_model

    from chatforge.errors import ConfigError

    model, tokenizer = _tiny_policy(tiny_tokenizer_dir)
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ConfigError, match="LoRA policy is not wired"):
        RolloutSampler(tokenizer, "vllm", tmp_path / "vllm_policy").sampler(lora)
    assert fake_vllm.built == [] and not (tmp_path / "vllm_policy").exists()
