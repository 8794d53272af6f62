"""Advantages for online RL as pure functions of rewards, values and masks.

Per-token tensors are (rows, tokens) with a 0/1 `mask` of the response tokens; a row's response
tokens are one contiguous run (prompt before it, padding after it). No model is called here.

GAE (Schulman et al. 2016, arXiv:1506.02438, Eq. 16), per row, backwards over its response tokens:
    δ_t = r_t + γ V_{t+1} − V_t          (V after the last response token is 0: the episode ends)
    A_t = δ_t + γ λ A_{t+1}
    R_t = A_t + V_t                       (the critic's return target)

Group-normalised advantages (GRPO, Shao et al. 2024, arXiv:2402.03300, §4.1.2), one scalar per
sample, for G samples of one prompt:  A_i = (r_i − mean(r)) / (std(r) + eps), std with Bessel's
correction (n − 1), as `torch.std`. Dr. GRPO (Liu et al. 2025, arXiv:2503.20783) drops the division:
`scale=False` gives A_i = r_i − mean(r).

Leave-one-out (RLOO, Ahmadian et al. 2024, arXiv:2402.14740, Eq. 5): the baseline of sample i is the
mean of the other G − 1 rewards:  A_i = r_i − (Σ_j r_j − r_i)/(G − 1) = G/(G − 1) · (r_i − mean(r)).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), both (rows, tokens) and 0 outside `mask`; no gradient flows."""
    rewards, values, mask = rewards.detach().float(), values.detach().float(), mask.float()
    rows, tokens = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(rows, dtype=rewards.dtype, device=rewards.device)
    next_advantage = torch.zeros_like(next_value)
    for t in reversed(range(tokens)):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        a_t = (delta + gamma * lam * next_advantage) * m
        advantages[:, t] = a_t
        # outside the response (padding after it) the next state is terminal: carry zeros
        next_value = values[:, t] * m
        next_advantage = a_t
    return advantages, (advantages + values) * mask


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8,
           all_sum: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """(x − mean) / sqrt(var + eps) over the masked positions (population variance); 0 outside the mask.

    `shift_mean=False` only rescales (keeps the mean's sign; some PPO code does this for advantages).
    `all_sum` sums a scalar over data-parallel ranks (rl/ranks.py), so that the mean and variance are the
    whole batch's and not this rank's rows'; None: this batch alone."""
    total = all_sum or (lambda scalar: scalar)
    mask = mask.float()
    n = total(mask.sum()).clamp(min=1)
    mean = total((values * mask).sum()) / n
    var = total(((values - mean).square() * mask).sum()) / n
    out = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's per-sample advantages; `rewards` (groups * group_size,) with each group's samples adjacent."""
    grouped = _grouped(rewards, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(centred[:, :1])
        centred = centred / (std + eps)
    return centred.reshape(-1)


def leave_one_out_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO's per-sample advantages r_i − mean of the other samples of its group."""
    if group_size < 2:
        raise ValueError("leave-one-out needs at least 2 samples per prompt")
    grouped = _grouped(rewards, group_size)
    others = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others).reshape(-1)


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries, got {tuple(rewards.shape)}")
    return rewards.float().reshape(-1, group_size)
