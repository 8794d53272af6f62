"""The DPO family: preference losses as pure functions of per-sequence answer log-probs.

Every function takes, per pair i of a batch, the policy's and the reference's log-probability of the
chosen answer y_w and of the rejected answer y_l given the prompt x (the *summed* log-probs of the
answer tokens, shape (B,)), and returns per-pair losses; the caller sums them (the engine divides by
the number of pairs of the whole step). No model is called here.

    h = (log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))      the log-ratio margin
    implicit reward r(y) = β · (log π(y|x) − log π_ref(y|x)),  so  r_w − r_l = β·h

Losses (Rafailov et al. 2023; Azar et al. 2023 for IPO; Zhao et al. 2023 SLiC for hinge; Mitchell
2023 for conservative DPO):

    sigmoid       −log σ(β h)
    conservative  −p* log σ(β h) − (1 − p*) log σ(−β h),  p* = 1 − ε  (ε = label_smoothing)
    hinge         max(0, 1 − β h)
    ipo           (h − 1/(2β))²

`conservative` is `sigmoid` with ε > 0: the binary cross-entropy of the Bradley-Terry probability
σ(βh) against a soft label p*(y_w ≻ y_l | x), i.e. the label is trusted with probability p*. (The
seed's objective writes only the first term, −p*·log σ(βh); alone that merely rescales the loss by
p*, it is the second term that stops the margin from being pushed to infinity.) ε may be a scalar or
a (B,) tensor of per-pair label noise.

reference-free: log π_ref = 0 for every answer, so h = log π(y_w) − log π(y_l) (`reference_free=True`).

SFT-regularized (DPO + λ·NLL on the chosen answer, "RPO" in Pang et al. 2024): adds
λ · (−log π(y_w|x)) / |y_w| per pair with `nll="per_token"` (the chosen answer's mean token NLL, as in
the paper), or λ · (−log π(y_w|x)) with `nll="per_sequence"`.

IPO and length. The IPO paper's h is built from sequence log-probs (sums over the answer tokens);
TRL's `loss_type="ipo"` divides each sequence log-prob by its token count first. The target margin
1/(2β) is then in nats per sequence in one case and in nats per token in the other, so the same β
means different things. `ipo_logps="sum"` (the default, the paper's) or `"mean"` (TRL's) selects it;
with "mean" the rewards and margins reported are per token too.

Gradient of the sigmoid loss (tests/test_dpo_losses.py checks it with autograd):
    ∂L/∂ log π(y_w) = −β σ(−β h)    (negative: a descent step raises the chosen answer's log-prob)
    ∂L/∂ log π(y_l) = +β σ(−β h)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

LossType = Literal["sigmoid", "hinge", "ipo"]
IpoLogps = Literal["sum", "mean"]
NllNorm = Literal["per_token", "per_sequence"]
LOSS_TYPES: tuple[str, ...] = ("sigmoid", "hinge", "ipo")


@dataclass
class PreferenceLoss:
    """Per-pair results, all shape (B,). `losses` carries the gradient; the rest are detached."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor  # β (log π(y_w) − log π_ref(y_w))
    rejected_rewards: torch.Tensor  # β (log π(y_l) − log π_ref(y_l))
    nll: torch.Tensor | None = None  # the chosen answer's NLL term (before λ), when sft_weight > 0

    @property
    def margins(self) -> torch.Tensor:
        return self.chosen_rewards - self.rejected_rewards

    @property
    def accuracies(self) -> torch.Tensor:
        """1 where the chosen answer's implicit reward is strictly higher (a tie counts 0), else 0."""
        return (self.chosen_rewards > self.rejected_rewards).float()


def logratio_margin(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor
) -> torch.Tensor:
    """h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)), shape (B,)."""
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


def sigmoid_loss(h: torch.Tensor, beta: float, label_smoothing: float | torch.Tensor = 0.0) -> torch.Tensor:
    """DPO, and conservative DPO for ε > 0: −(1 − ε) log σ(βh) − ε log σ(−βh)."""
    eps = label_smoothing
    return -(1.0 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)


def hinge_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    """SLiC-style hinge on the scaled margin: max(0, 1 − βh)."""
    return torch.relu(1.0 - beta * h)


def ipo_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    """IPO: (h − 1/(2β))², regressing the margin to a finite target instead of pushing it to infinity."""
    return (h - 1.0 / (2.0 * beta)) ** 2


def preference_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor | None,
    ref_rejected: torch.Tensor | None,
    *,
    loss_type: LossType = "sigmoid",
    beta: float = 0.1,
    label_smoothing: float | torch.Tensor = 0.0,
    reference_free: bool = False,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
    ipo_logps: IpoLogps = "sum",
    sft_weight: float = 0.0,
    nll: NllNorm = "per_token",
) -> PreferenceLoss:
    """Per-pair loss of `loss_type` on summed answer log-probs (see the module docstring).

    `chosen_tokens`/`rejected_tokens` (answer token counts, (B,)) are needed for `ipo_logps="mean"`
    and for `sft_weight > 0` with `nll="per_token"`. `ref_*` may be None only with `reference_free`.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, not {beta}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")
    if loss_type != "sigmoid" and (torch.is_tensor(label_smoothing) or label_smoothing != 0.0):
        raise ValueError(f"label_smoothing applies to the sigmoid loss only, not {loss_type!r}")
    if reference_free:
        ref_chosen, ref_rejected = torch.zeros_like(policy_chosen), torch.zeros_like(policy_rejected)
    elif ref_chosen is None or ref_rejected is None:
        raise ValueError("reference log-probs are required unless reference_free=True")
    pc, pr, rc, rr = policy_chosen, policy_rejected, ref_chosen.to(policy_chosen), ref_rejected.to(policy_rejected)
    if loss_type == "ipo" and ipo_logps == "mean":
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("ipo_logps='mean' needs chosen_tokens and rejected_tokens")
        nc, nr = chosen_tokens.to(pc).clamp(min=1), rejected_tokens.to(pr).clamp(min=1)
        pc, rc, pr, rr = pc / nc, rc / nc, pr / nr, rr / nr
    h = logratio_margin(pc, pr, rc, rr)
    if loss_type == "sigmoid":
        losses = sigmoid_loss(h, beta, label_smoothing)
    elif loss_type == "hinge":
        losses = hinge_loss(h, beta)
    else:
        losses = ipo_loss(h, beta)
    nll_term = None
    if sft_weight > 0:
        nll_term = -policy_chosen
        if nll == "per_token":
            if chosen_tokens is None:
                raise ValueError("sft_weight with nll='per_token' needs chosen_tokens")
            nll_term = nll_term / chosen_tokens.to(policy_chosen).clamp(min=1)
        losses = losses + sft_weight * nll_term
        nll_term = nll_term.detach()
    return PreferenceLoss(
        losses=losses,
        chosen_rewards=(beta * (pc - rc)).detach(),
        rejected_rewards=(beta * (pr - rr)).detach(),
        nll=nll_term,
    )
