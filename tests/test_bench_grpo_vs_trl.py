"""bench/grpo_vs_trl.py: its reward is the same pure function on both sides, and the chatforge side's
config still validates against the grpo stage (a renamed key broke it once)."""

import pytest

from script_loader import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench/grpo_vs_trl.py")


def test_reward_is_the_digits_share_on_both_sides(bench):
    assert bench.reward_of("") == 0.0
    assert bench.reward_of("a1b2") == 0.5
    assert bench.reward_of("The answer is 42.") == pytest.approx(2 / 17)
    assert bench.chatforge_reward({"prompt": []}, "12x") == pytest.approx(2 / 3)
    completions = [[{"role": "assistant", "content": "7"}], [{"role": "assistant", "content": "no"}]]
    assert bench.trl_reward(prompts=[[], []], completions=completions, trainer_state=None) == [1.0, 0.0]


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_chatforge_config_matches_the_trl_settings(bench, algo, tmp_path):
    spec = {"model_dir": str(tmp_path / "model"), "prompts_file": str(tmp_path / "p.jsonl"), "prompts_per_step": 4,
            "group": 4, "max_new_tokens": 64, "beta": 0.04, "seed": 1, "warmup": 1, "steps": 3}
    cfg = bench.chatforge_config(spec, algo, tmp_path / "out")
    assert cfg.rollout.prompts_per_rollout * cfg.rollout.samples_per_prompt == cfg.train.micro_batch_size == 16
    assert cfg.rollout.epochs == 1 and cfg.train.grad_accum_steps == 1 and cfg.train.max_steps == 5
    assert cfg.rollout.sampling.temperature == 1.0 and cfg.rollout.sampling.max_new_tokens == 64
    assert cfg.kl.coef == 0.04 and cfg.reward.gold is None
    if algo == "rloo":
        assert (cfg.loss.advantage, cfg.kl.estimator, cfg.kl.in_reward) == ("rloo", "k1", True)
    else:
        assert (cfg.loss.advantage, cfg.kl.estimator, cfg.kl.in_reward) == ("group", "k3", False)
    # as TRL: GRPO with one iteration and one step per generation skips the old-policy forward; RLOO's KL in
    # the reward needs it (TRL's RLOOTrainer runs it too)
    from chatforge.rl.config import skips_old_forward

    assert skips_old_forward(cfg.rollout, cfg.kl, cfg.train.micro_batch_size, critic_free=True) == (algo == "grpo")
