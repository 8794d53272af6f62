"""Reward-model losses against values worked out by hand from the papers' formulas."""

from __future__ import annotations

import math

import torch

from chatforge.losses.reward import bradley_terry_loss, centring_loss, kwise_ranking_loss, ranked_pairs


def _nls(x: float) -> float:
    """−log σ(x), written out: log(1 + e^−x)."""
    return math.log(1.0 + math.exp(-x))


def test_bradley_terry_by_hand():
    """r_c − r_r = [1.0, −0.5, 0.0] → loss = log(1+e^−1), log(1+e^0.5), log 2 = [0.3133, 0.9741, 0.6931]."""
    chosen = torch.tensor([2.0, 0.5, 1.0])
    rejected = torch.tensor([1.0, 1.0, 1.0])
    loss, stats = bradley_terry_loss(chosen, rejected)
    torch.testing.assert_close(loss, torch.tensor([0.313262, 0.974077, 0.693147]), atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, torch.tensor([_nls(1.0), _nls(-0.5), _nls(0.0)]))
    assert stats["correct"].tolist() == [1.0, 0.0, 0.0]  # a tie counts as wrong
    torch.testing.assert_close(stats["margin"], torch.tensor([1.0, -0.5, 0.0]))


def test_bradley_terry_margin_is_llama2_eq2():
    """−log σ(r_c − r_r − m): diff 1.0, m = [0, 1, 2] → log(1+e^−1), log 2, log(1+e^1)."""
    chosen, rejected = torch.tensor([2.0, 2.0, 2.0]), torch.ones(3)
    loss, _ = bradley_terry_loss(chosen, rejected, margin=torch.tensor([0.0, 1.0, 2.0]))
    torch.testing.assert_close(loss, torch.tensor([_nls(1.0), _nls(0.0), _nls(-1.0)]))
    scalar, _ = bradley_terry_loss(chosen, rejected, margin=1.0)
    torch.testing.assert_close(scalar, torch.full((3,), _nls(0.0)))


def test_bradley_terry_gradient_signs():
    """d/dr_c = −σ(−Δ) < 0 (descent raises the chosen reward), d/dr_r = +σ(−Δ) > 0."""
    chosen = torch.tensor([0.3], requires_grad=True)
    rejected = torch.tensor([0.1], requires_grad=True)
    loss, _ = bradley_terry_loss(chosen, rejected)
    loss.sum().backward()
    expected = 1.0 / (1.0 + math.exp(0.2))  # σ(−0.2)
    torch.testing.assert_close(chosen.grad, torch.tensor([-expected]))
    torch.testing.assert_close(rejected.grad, torch.tensor([expected]))


def test_bradley_terry_is_stable_for_large_differences():
    loss, _ = bradley_terry_loss(torch.tensor([0.0, 200.0]), torch.tensor([200.0, 0.0]))
    torch.testing.assert_close(loss, torch.tensor([200.0, 0.0]))


def test_centring_by_hand():
    """λ(r_c + r_r)², λ = 0.01: (2+1)² → 0.09, (0.5−0.5)² → 0; gradient 2λ(r_c + r_r) pulls the sum to 0."""
    chosen = torch.tensor([2.0, 0.5], requires_grad=True)
    rejected = torch.tensor([1.0, -0.5], requires_grad=True)
    loss = centring_loss(chosen, rejected, 0.01)
    torch.testing.assert_close(loss, torch.tensor([0.09, 0.0]))
    loss.sum().backward()
    torch.testing.assert_close(chosen.grad, torch.tensor([0.06, 0.0]))
    torch.testing.assert_close(rejected.grad, torch.tensor([0.06, 0.0]))


def test_ranked_pairs_all_k_choose_2():
    ranks = torch.tensor([[0, 1, 2, 3]])
    b, win, lose = ranked_pairs(ranks, torch.ones(1, 4, dtype=torch.bool))
    assert sorted(zip(win.tolist(), lose.tolist())) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert b.tolist() == [0] * 6


def test_kwise_by_hand_k3():
    """InstructGPT eq. 1, K = 3, rewards best-first [3, 1, 2]:
    pairs (0,1): Δ=2, (0,2): Δ=1, (1,2): Δ=−1 → loss = (log(1+e^−2) + log(1+e^−1) + log(1+e^1)) / 3
    = (0.126928 + 0.313262 + 1.313262) / 3 = 0.584484; 2 of 3 pairs correct."""
    rewards = torch.tensor([[3.0, 1.0, 2.0]])
    loss, has_pairs, stats = kwise_ranking_loss(rewards, torch.tensor([[0, 1, 2]]), torch.ones(1, 3, dtype=torch.bool))
    torch.testing.assert_close(loss, torch.tensor([0.584484]), atol=1e-6, rtol=0)
    torch.testing.assert_close(loss, torch.tensor([(_nls(2.0) + _nls(1.0) + _nls(-1.0)) / 3]))
    assert has_pairs.tolist() == [True]
    assert sorted(stats["correct"].tolist()) == [0.0, 1.0, 1.0]


def test_kwise_mixed_k_padding_and_ties():
    """Ranking 0: K=2 padded to 4 (the padded rewards are garbage and must not matter): Δ=0.5 → log(1+e^−0.5).
    Ranking 1: K=4 with ranks [0, 1, 1, 2] (responses 1 and 2 tied): 5 untied pairs, not C(4,2)=6:
      (0,1) Δ=1, (0,2) Δ=2, (0,3) Δ=3, (1,3) Δ=2, (2,3) Δ=1 → mean of −log σ over those five.
    Ranking 2: all tied → no pair, loss 0, not counted."""
    rewards = torch.tensor([[1.0, 0.5, 99.0, -99.0], [3.0, 2.0, 1.0, 0.0], [1.0, 2.0, 0.0, 0.0]])
    ranks = torch.tensor([[0, 1, 0, 0], [0, 1, 1, 2], [0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    loss, has_pairs, _ = kwise_ranking_loss(rewards, ranks, mask)
    expected_1 = (_nls(1.0) + _nls(2.0) + _nls(3.0) + _nls(2.0) + _nls(1.0)) / 5
    torch.testing.assert_close(loss, torch.tensor([_nls(0.5), expected_1, 0.0]))
    assert has_pairs.tolist() == [True, True, False]


def test_kwise_k2_equals_bradley_terry_with_margin_and_centring():
    chosen, rejected = torch.tensor([0.7, -0.2]), torch.tensor([0.1, 0.4])
    margin = torch.tensor([0.5, 0.25])
    bt, _ = bradley_terry_loss(chosen, rejected, margin)
    bt = bt + centring_loss(chosen, rejected, 0.1)
    rewards = torch.stack([chosen, rejected], dim=1)
    margin_BKK = torch.zeros(2, 2, 2)
    margin_BKK[:, 0, 1] = margin
    kw, _, _ = kwise_ranking_loss(rewards, torch.tensor([[0, 1], [0, 1]]), torch.ones(2, 2, dtype=torch.bool),
                                  margin_BKK, center_coefficient=0.1)
    torch.testing.assert_close(kw, bt)


def test_kwise_gradient_signs_and_one_element_per_ranking():
    """Gradient of the ranking mean: the best response is pushed up, the worst down; each pair weighs 1/C(K,2)."""
    rewards = torch.zeros(1, 3, requires_grad=True)
    loss, _, _ = kwise_ranking_loss(rewards, torch.tensor([[0, 1, 2]]), torch.ones(1, 3, dtype=torch.bool))
    loss.sum().backward()
    # at r = 0 every pair has d(−log σ(Δ))/dΔ = −1/2; best wins 2 pairs, middle wins 1 and loses 1.
    torch.testing.assert_close(rewards.grad, torch.tensor([[-2 / 6, 0.0, 2 / 6]]))
