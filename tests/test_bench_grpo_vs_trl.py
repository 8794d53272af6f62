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


def test_cpu_phases_split_the_timed_steps(bench):
    """Calls starting inside the timed window (CPU stamps 10 to 20, two steps) count, per step; the
    rollout's rest and `other` are what the named phases leave; a call before the window does not count."""
    import _trl_common as common

    clock = common.StepClock()
    clock.cpu_stamps = [0.0, 10.0, 15.0, 20.0]
    phases = bench.CpuPhases()
    phases.events = [
        ("generate", 2.0, 9.0),  # warm-up step: left out
        ("rollout", 10.0, 2.0), ("generate", 10.0, 1.0), ("scoring", 11.0, 0.4),
        ("train_forward", 12.0, 0.6), ("backward", 12.6, 1.0), ("clip", 13.6, 0.1), ("optimizer_step", 13.7, 0.1),
        ("rollout", 15.0, 2.0), ("generate", 15.0, 1.2), ("scoring", 16.2, 0.4),
        ("train_forward", 17.0, 0.6), ("backward", 17.6, 1.2), ("clip", 18.8, 0.1), ("optimizer_step", 18.9, 0.1),
    ]
    cpu = phases.per_step(clock, {"warmup": 1, "steps": 2})
    expected = {"generation": 1.1, "scoring_forwards": 0.4, "rollout_rest": 0.5, "train_forward": 0.6, "backward": 1.1,
                "optimizer": 0.2, "other": 1.1}
    assert cpu == pytest.approx(expected)
    assert [key for key, _ in bench.PHASES] == list(expected)
