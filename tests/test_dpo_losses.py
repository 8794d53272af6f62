"""The DPO-family losses against values worked out by hand from each paper's formula.

The fixed batch (β = 0.5), summed answer log-probs:

    pair   log π(y_w)  log π(y_l)  log π_ref(y_w)  log π_ref(y_l)   h = (−10+11) − (−12+11) = 2
     0       −10         −12          −11             −11             βh = 1
     1        −5          −4           −5              −5           h = (0) − (1) = −1, βh = −0.5

so the implicit rewards β(log π − log π_ref) are chosen (0.5, 0), rejected (−0.5, 0.5), margins (1, −0.5).
"""

from __future__ import annotations

import math

import pytest
import torch

from chatforge.losses.dpo import hinge_loss, ipo_loss, logratio_margin, preference_loss, sigmoid_loss

BETA = 0.5
PC, PR = torch.tensor([-10.0, -5.0]), torch.tensor([-12.0, -4.0])
RC, RR = torch.tensor([-11.0, -5.0]), torch.tensor([-11.0, -5.0])
NC, NR = torch.tensor([4, 2]), torch.tensor([2, 5])  # answer token counts


def _close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=1e-6, rtol=1e-6)


def test_margin_and_rewards():
    _close(logratio_margin(PC, PR, RC, RR), [2.0, -1.0])
    out = preference_loss(PC, PR, RC, RR, beta=BETA)
    _close(out.chosen_rewards, [0.5, 0.0])
    _close(out.rejected_rewards, [-0.5, 0.5])
    _close(out.margins, [1.0, -0.5])
    _close(out.accuracies, [1.0, 0.0])


def test_sigmoid_dpo():
    # −log σ(1) = log(1 + e^−1) = 0.3132617;  −log σ(−0.5) = log(1 + e^0.5) = 0.9740770
    _close(preference_loss(PC, PR, RC, RR, beta=BETA).losses, [0.3132617, 0.9740770])
    _close(sigmoid_loss(torch.tensor([2.0, -1.0]), BETA), [math.log1p(math.exp(-1)), math.log1p(math.exp(0.5))])


def test_conservative_dpo_label_smoothing():
    # ε = 0.1 (p* = 0.9): 0.9·log(1+e^−1) + 0.1·log(1+e^1) = 0.9·0.3132617 + 0.1·1.3132617 = 0.4132617
    #                     0.9·log(1+e^0.5) + 0.1·log(1+e^−0.5) = 0.9·0.9740770 + 0.1·0.4740770 = 0.9240770
    out = preference_loss(PC, PR, RC, RR, beta=BETA, label_smoothing=0.1)
    _close(out.losses, [0.4132617, 0.9240770])
    # per-pair p*: ε = (0, 0.1) gives plain DPO on pair 0 and cDPO on pair 1
    per_pair = preference_loss(PC, PR, RC, RR, beta=BETA, label_smoothing=torch.tensor([0.0, 0.1]))
    _close(per_pair.losses, [0.3132617, 0.9240770])
    # p* = 1/2: the loss no longer prefers either answer, its minimum is at h = 0 (value log 2)
    _close(sigmoid_loss(torch.tensor([0.0]), BETA, 0.5), [math.log(2)])


def test_hinge():
    # max(0, 1 − 1) = 0;  max(0, 1 + 0.5) = 1.5
    _close(preference_loss(PC, PR, RC, RR, loss_type="hinge", beta=BETA).losses, [0.0, 1.5])
    _close(hinge_loss(torch.tensor([0.5]), BETA), [0.75])


def test_ipo_summed_and_length_averaged():
    # summed (the IPO paper): target 1/(2β) = 1;  (2 − 1)² = 1,  (−1 − 1)² = 4
    _close(preference_loss(PC, PR, RC, RR, loss_type="ipo", beta=BETA).losses, [1.0, 4.0])
    # length-averaged (TRL): h0 = 1/4 − (−1)/2 = 0.75 → (0.75 − 1)² = 0.0625;
    #                        h1 = 0/2 − 1/5 = −0.2 → (−0.2 − 1)² = 1.44
    out = preference_loss(PC, PR, RC, RR, loss_type="ipo", beta=BETA, ipo_logps="mean", chosen_tokens=NC, rejected_tokens=NR)
    _close(out.losses, [0.0625, 1.44])
    _close(out.chosen_rewards, [0.5 * 1 / 4, 0.0])  # rewards are per token too
    _close(ipo_loss(torch.tensor([1.0]), BETA), [0.0])  # at the target the loss is 0


def test_reference_free_ignores_the_reference():
    # h = log π(y_w) − log π(y_l) = (2, −1), the same βh as above by construction of the batch
    out = preference_loss(PC, PR, RC * 7, RR - 3, beta=BETA, reference_free=True)
    _close(out.losses, [0.3132617, 0.9740770])
    _close(out.chosen_rewards, [-5.0, -2.5])  # β log π(y_w)
    none = preference_loss(PC, PR, None, None, beta=BETA, reference_free=True)
    _close(none.losses, out.losses.tolist())


def test_sft_regularized():
    # λ = 0.2, per token: + 0.2·10/4 = 0.5 and + 0.2·5/2 = 0.5;  per sequence: + 2.0 and + 1.0
    per_token = preference_loss(PC, PR, RC, RR, beta=BETA, sft_weight=0.2, chosen_tokens=NC)
    _close(per_token.losses, [0.8132617, 1.4740770])
    _close(per_token.nll, [2.5, 2.5])
    per_seq = preference_loss(PC, PR, RC, RR, beta=BETA, sft_weight=0.2, nll="per_sequence")
    _close(per_seq.losses, [2.3132617, 1.9740770])


def test_dpo_gradient_sign_and_magnitude():
    # ∂L/∂log π(y_w) = −β σ(−βh): pair 0 −0.5·σ(−1) = −0.1344707, pair 1 −0.5·σ(0.5) = −0.3112297
    pc, pr = PC.clone().requires_grad_(True), PR.clone().requires_grad_(True)
    preference_loss(pc, pr, RC, RR, beta=BETA).losses.sum().backward()
    _close(pc.grad, [-0.1344707, -0.3112297])
    _close(pr.grad, [0.1344707, 0.3112297])
    assert (pc.grad < 0).all() and (pr.grad > 0).all()  # descent raises chosen, lowers rejected
    # the rewards are detached: no gradient flows through the metrics
    assert not preference_loss(pc, pr, RC, RR, beta=BETA).chosen_rewards.requires_grad


def test_bad_arguments():
    with pytest.raises(ValueError, match="beta"):
        preference_loss(PC, PR, RC, RR, beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        preference_loss(PC, PR, RC, RR, loss_type="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match="reference"):
        preference_loss(PC, PR, None, None)
    with pytest.raises(ValueError, match="unknown loss_type"):
        preference_loss(PC, PR, RC, RR, loss_type="kto")
