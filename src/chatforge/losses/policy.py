"""Policy-gradient losses for online RL (PPO, GRPO, RLOO) as pure functions of per-token tensors.

Every function takes per-token tensors of one shape (rows, tokens), returns per-token values of
that shape, and leaves the reduction to the caller: the objective sums over the valid tokens (or
per sequence) and the engine divides by the count of the whole step. No model is called here.

Notation, per response token t of a sample drawn from the old policy π_old:
    ρ_t = exp(log π(a_t|s_t) − log π_old(a_t|s_t))            the importance ratio
    A_t                                                        the advantage (GAE, group-normalised, ...)

Clipped surrogate (Schulman et al. 2017, arXiv:1707.06347, Eq. 7), as a loss to minimise:
    L_t = max(−ρ_t A_t, −clip(ρ_t, 1 − ε_low, 1 + ε_high) A_t)
(ε_high > ε_low is DAPO's "clip-higher", Yu et al. 2025, arXiv:2503.14476.)

Clipped value loss (the PPO2 baselines' rule, also in InstructGPT-style RLHF code):
    V_clip = V_old + clip(V − V_old, −δ, δ)
    L_t = ½ max((V − R_t)², (V_clip − R_t)²)                    R_t: the return target

KL estimators of KL(π || π_ref) from a token sampled from π (Schulman 2020, "Approximating KL
divergence", http://joschu.net/blog/kl-approx.html), with log r = log π_ref − log π:
    k1 = −log r                 unbiased, high variance, can be negative per token
    k2 = ½ (log r)²             biased, low variance, ≥ 0
    k3 = (r − 1) − log r        unbiased, low variance, ≥ 0 (GRPO's, DeepSeekMath arXiv:2402.03300 Eq. 4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

KLEstimator = Literal["k1", "k2", "k3"]
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: KLEstimator = "k1") -> torch.Tensor:
    """Per-token estimate of KL(π || π_ref) for tokens sampled from π (see the module docstring)."""
    log_r = ref_logp - logp
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r.square()
    if estimator == "k3":
        # clamp: exp of a large log-ratio overflows; beyond ±20 nats the estimate is meaningless anyway
        log_r = log_r.clamp(-20.0, 20.0)
        return torch.expm1(log_r) - log_r
    raise ValueError(f"unknown KL estimator {estimator!r}; use one of {', '.join(KL_ESTIMATORS)}")


@dataclass
class SurrogateLoss:
    """Per-token results, all (rows, tokens). `losses` carries the gradient; the rest are detached."""

    losses: torch.Tensor
    ratio: torch.Tensor  # ρ_t
    clipped: torch.Tensor  # 1.0 where the clipped term was the larger loss (its gradient is 0), else 0.0


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip_low: float = 0.2, clip_high: float | None = None
) -> SurrogateLoss:
    """PPO's clipped surrogate loss per token: max(−ρA, −clip(ρ, 1−ε_low, 1+ε_high)A)."""
    clip_high = clip_low if clip_high is None else clip_high
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    losses = torch.maximum(unclipped, clipped)
    return SurrogateLoss(losses, ratio.detach(), (clipped > unclipped).float().detach())


@dataclass
class ValueLoss:
    losses: torch.Tensor  # (rows, tokens), with gradient
    clipped: torch.Tensor  # 1.0 where the clipped error was the larger one, else 0.0


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip_range: float | None = 0.2
) -> ValueLoss:
    """½ max((V − R)², (V_clip − R)²) per token with V_clip = V_old + clip(V − V_old, ±clip_range);
    `clip_range=None` gives the plain ½ (V − R)²."""
    unclipped = (values - returns).square()
    if clip_range is None:
        return ValueLoss(0.5 * unclipped, torch.zeros_like(unclipped))
    v_clip = old_values + (values - old_values).clamp(-clip_range, clip_range)
    clipped = (v_clip - returns).square()
    return ValueLoss(0.5 * torch.maximum(unclipped, clipped), (clipped > unclipped).float().detach())


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = −Σ_v p_v log p_v over the last dimension (in float32)."""
    return entropy_from_logprobs(torch.log_softmax(logits.float(), dim=-1))


def entropy_from_logprobs(logp: torch.Tensor) -> torch.Tensor:
    """H = −Σ_v p_v log p_v from normalised log-probabilities over the last dimension."""
    return -(logp.exp() * logp).sum(dim=-1)


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where `mask` is 1 (0 when there are none)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)
