"""Policy-gradient losses, advantages and the KL controller against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from chatforge.losses.advantages import gae, group_advantages, leave_one_out_advantages, whiten
from chatforge.losses.policy import clipped_surrogate, clipped_value_loss, entropy_from_logits, kl_estimate
from chatforge.rl.kl import AdaptiveKLConfig, KLController


def test_kl_estimators_by_hand():
    """π(a) = 0.5, π_ref(a) = 0.25: log r = log(0.25/0.5) = −ln 2.
    k1 = ln 2 = 0.693147; k2 = ½ (ln 2)² = 0.240227; k3 = (0.5 − 1) + ln 2 = 0.193147."""
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(0.693147, abs=1e-6)
    assert kl_estimate(logp, ref, "k2").item() == pytest.approx(0.240227, abs=1e-6)
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(0.193147, abs=1e-6)
    # the reference more likely than the policy: k1 negative, k2 and k3 not
    assert kl_estimate(ref, logp, "k1").item() == pytest.approx(-0.693147, abs=1e-6)
    assert kl_estimate(ref, logp, "k3").item() == pytest.approx(1.0 - 0.693147, abs=1e-6)  # (2 − 1) − ln 2
    equal = kl_estimate(logp, logp, "k3")
    assert equal.item() == 0.0
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(logp, ref, "k4")


def test_kl_estimators_average_to_the_true_kl():
    """k1 and k3 are unbiased: their mean over many draws from π approaches Σ π log(π/π_ref)."""
    p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.4, 0.4, 0.2])
    true_kl = float((p * (p / q).log()).sum())
    draws = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logp, ref = p.log()[draws], q.log()[draws]
    for estimator in ("k1", "k3"):
        assert kl_estimate(logp, ref, estimator).mean().item() == pytest.approx(true_kl, abs=3e-3)


def test_clipped_surrogate_by_hand():
    """ε = 0.2. ρ = 1.5, A = 2: max(−3, −2·1.2) = −2.4 (clipped); ρ = 0.5, A = 2: max(−1, −1.6) = −1;
    ρ = 0.5, A = −1: max(0.5, 0.8) = 0.8 (clipped); ρ = 1.5, A = −1: max(1.5, 1.2) = 1.5."""
    ratio = torch.tensor([1.5, 0.5, 0.5, 1.5])
    adv = torch.tensor([2.0, 2.0, -1.0, -1.0])
    logp = ratio.log().requires_grad_(True)
    out = clipped_surrogate(logp, torch.zeros(4), adv, 0.2)
    torch.testing.assert_close(out.losses.detach(), torch.tensor([-2.4, -1.0, 0.8, 1.5]))
    torch.testing.assert_close(out.clipped, torch.tensor([1.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(out.ratio, ratio)
    out.losses.sum().backward()
    # d(−ρA)/d log π = −ρA where unclipped; 0 where the clipped term is the loss
    torch.testing.assert_close(logp.grad, torch.tensor([0.0, -1.0, 0.0, 1.5]))
    # clip-higher: ε_high = 0.28 lets ρ = 1.5 with A = 2 reach −2·1.28 = −2.56
    high = clipped_surrogate(ratio.log(), torch.zeros(4), adv, 0.2, 0.28)
    assert high.losses[0].item() == pytest.approx(-2.56)


def test_clipped_value_loss_by_hand():
    """δ = 0.2. V_old = 1, V = 1.5, R = 2: ½max(0.25, (1.2 − 2)²) = 0.32; V = 0.5, R = 0: ½max(0.25,
    0.8²) = 0.32; V = 1.1, R = 2 (inside the clip range): ½ · 0.81 = 0.405."""
    values = torch.tensor([1.5, 0.5, 1.1], requires_grad=True)
    old, returns = torch.ones(3), torch.tensor([2.0, 0.0, 2.0])
    out = clipped_value_loss(values, old, returns, 0.2)
    torch.testing.assert_close(out.losses.detach(), torch.tensor([0.32, 0.32, 0.405]))
    torch.testing.assert_close(out.clipped, torch.tensor([1.0, 1.0, 0.0]))
    out.losses.sum().backward()
    torch.testing.assert_close(values.grad, torch.tensor([0.0, 0.0, -0.9]))  # clipped: no gradient; else V − R
    plain = clipped_value_loss(values.detach(), old, returns, None)
    torch.testing.assert_close(plain.losses, torch.tensor([0.125, 0.125, 0.405]))


def test_entropy_by_hand():
    """Two equal logits: ln 2; probabilities (0.25, 0.75): −(0.25 ln 0.25 + 0.75 ln 0.75) = 0.562335."""
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])
    torch.testing.assert_close(entropy_from_logits(logits), torch.tensor([math.log(2.0), 0.562335]), atol=1e-6, rtol=0)


def test_gae_by_hand():
    """Row of 5 positions: a prompt token, 3 response tokens, padding. Rewards (0, 0, 1), values
    (0.5, 0.6, 0.7), γ = 1, λ = 0.9, backwards:
      t3: δ = 1 − 0.7 = 0.3, A = 0.3;  t2: δ = 0.7 − 0.6 = 0.1, A = 0.1 + 0.9·0.3 = 0.37;
      t1: δ = 0.6 − 0.5 = 0.1, A = 0.1 + 0.9·0.37 = 0.433;  returns A + V = 0.933, 0.97, 1.0.
    γ = 0.5, λ = 1: A = (−0.25, −0.1, 0.3), returns = discounted reward (0.25, 0.5, 1)."""
    mask = torch.tensor([[0, 1, 1, 1, 0]])
    rewards = torch.tensor([[9.0, 0.0, 0.0, 1.0, 9.0]])  # outside the mask: ignored
    values = torch.tensor([[9.0, 0.5, 0.6, 0.7, 9.0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.9)
    torch.testing.assert_close(adv, torch.tensor([[0.0, 0.433, 0.37, 0.3, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.0, 0.933, 0.97, 1.0, 0.0]]))
    adv, ret = gae(rewards, values, mask, gamma=0.5, lam=1.0)
    torch.testing.assert_close(adv, torch.tensor([[0.0, -0.25, -0.1, 0.3, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.0, 0.25, 0.5, 1.0, 0.0]]))


def test_gae_rows_are_independent():
    """Two rows of different lengths in one batch give each row's own GAE (no leak across padding)."""
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    rewards = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    values = torch.tensor([[0.2, 0.4, 5.0], [0.1, 0.1, 0.1]])
    adv, _ = gae(rewards, values, mask, 1.0, 1.0)
    alone, _ = gae(rewards[:1, :2], values[:1, :2], mask[:1, :2], 1.0, 1.0)
    torch.testing.assert_close(adv[:1, :2], alone)
    torch.testing.assert_close(adv[0], torch.tensor([0.8, 0.6, 0.0]))  # 1 − 0.2, 1 − 0.4


def test_whiten_by_hand():
    """Masked values (1, 2, 3): mean 2, population variance 2/3 → (−1.224745, 0, 1.224745); the
    masked-out 100 neither counts nor survives."""
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    torch.testing.assert_close(whiten(values, mask, eps=0.0), torch.tensor([[-1.224745, 0.0, 1.224745, 0.0]]))
    torch.testing.assert_close(whiten(values, mask, shift_mean=False, eps=0.0), torch.tensor([[0.775255, 2.0, 3.224745, 0.0]]))


def test_group_advantages_by_hand():
    """Group (1, 0, 0, 1): mean 0.5, std (n − 1) = sqrt(1/3) = 0.577350 → ±0.866025; group (1, 1, 1, 1):
    all 0 (no signal). Dr. GRPO (no std): ±0.5."""
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    torch.testing.assert_close(
        group_advantages(rewards, 4, eps=0.0)[:4], torch.tensor([0.866025, -0.866025, -0.866025, 0.866025])
    )
    torch.testing.assert_close(group_advantages(rewards, 4)[4:], torch.zeros(4))
    torch.testing.assert_close(group_advantages(rewards, 4, scale=False), torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(rewards, 3)


def test_leave_one_out_by_hand():
    """(1, 0, 0, 1): sample 0's baseline is (0 + 0 + 1)/3, so 2/3; sample 1's is 2/3, so −2/3.
    (3, 1): 3 − 1 = 2 and 1 − 3 = −2."""
    torch.testing.assert_close(
        leave_one_out_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4), torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3])
    )
    torch.testing.assert_close(leave_one_out_advantages(torch.tensor([3.0, 1.0]), 2), torch.tensor([2.0, -2.0]))
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out_advantages(torch.tensor([1.0]), 1)


def test_adaptive_kl_by_hand():
    """β = 0.1, target 6, horizon 10000, 100 samples. KL 9: e = clip(0.5) = 0.2 → 0.1·(1 + 0.2·0.01) =
    0.1002. KL 3: e = −0.2 → 0.0998. KL 6.6: e = 0.1 → 0.1001. Fixed: unchanged."""
    for measured, expected in ((9.0, 0.1002), (3.0, 0.0998), (6.6, 0.1001)):
        controller = KLController(0.1, AdaptiveKLConfig(target=6.0, horizon=10000))
        assert controller.update(measured, 100) == pytest.approx(expected, rel=1e-9)
    fixed = KLController(0.1)
    assert fixed.update(50.0, 100) == 0.1
    moved = KLController(0.1, AdaptiveKLConfig(target=6.0, horizon=10000))
    moved.update(9.0, 100)
    restored = KLController(0.5, AdaptiveKLConfig(target=6.0, horizon=10000))
    restored.load_state_dict(moved.state_dict())
    assert restored.value == moved.value
