"""Reward-model losses: Bradley–Terry pairs (with an optional margin), InstructGPT's K-wise
ranking loss, and reward centring. Pure functions of reward tensors; no model calls.

Notation: r_w is the reward of the better ("winning") response, r_l of the worse one, σ the logistic.

- Bradley–Terry (Stiennon et al. 2020, arXiv:2009.01325 eq. 1; Ouyang et al. 2022 eq. 1 for K=2):
      loss = −log σ(r_w − r_l − m)
  with m = 0, or Llama 2's margin (Touvron et al. 2023, arXiv:2307.09288 eq. 2): a larger m for pairs
  whose preference is clearer, so the model must separate them by more.
- K-wise ranking (InstructGPT, Ouyang et al. 2022, arXiv:2203.02155 eq. 1): a prompt with K ranked
  responses gives C(K,2) = K(K−1)/2 ordered pairs, all scored from one forward pass per response
  and trained as ONE batch element:
      loss(ranking) = −1/C(K,2) · Σ_{(w,l)} log σ(r_w − r_l)
  InstructGPT's reason: treating the pairs of one ranking as separate examples makes every response
  appear in K−1 updates of an epoch, and the correlated pairs over-fit the reward model after one
  epoch. Departure: tied responses (equal rank) give no pair, so a ranking with ties averages over
  its untied pairs instead of C(K,2); a ranking with no untied pair gives no loss (and no count).
- Reward centring (Eisenstein et al. 2023, "Helping or Herding?", arXiv:2312.09244, Sec. 3; the form of
  TRL's `RewardTrainer(center_rewards_coefficient=…)`): an auxiliary λ·(r_w + r_l)² per pair that
  pulls the rewards of every prompt towards mean zero. The pairwise loss sees only differences, so
  without it the offset of the rewards drifts freely and differs from prompt to prompt.

Every function returns per-element losses (the caller sums them and divides by the global count; see
`chatforge.engine.loop`) and detached per-pair statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin: torch.Tensor | float | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """−log σ(r_c − r_r − m) per pair (Bradley–Terry; Llama 2's margin m, none when None).

    Args:
        chosen_rewards, rejected_rewards: (P,) scalar rewards of each pair's better and worse response.
        margin: (P,) or a float, the margin m each pair must be separated by; None for m = 0.
    Returns:
        (loss_P, stats): per-pair loss (P,), and detached per-pair `correct` (1.0 where r_c > r_r,
        ties count as wrong, as in RewardBench) and `margin` (r_c − r_r, without m).
    """
    diff = chosen_rewards.float() - rejected_rewards.float()
    shifted = diff - margin if margin is not None else diff
    loss = -F.logsigmoid(shifted)  # = softplus(−shifted), stable for large |shifted|
    stats = {"correct": (diff > 0).float().detach(), "margin": diff.detach()}
    return loss, stats


def centring_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, coefficient: float) -> torch.Tensor:
    """λ·(r_c + r_r)² per pair (Eisenstein et al. 2023; TRL's `center_rewards_coefficient` form)."""
    return coefficient * (chosen_rewards.float() + rejected_rewards.float()) ** 2


def ranked_pairs(ranks_BK: torch.Tensor, mask_BK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every ordered pair of each ranking: (b, w, l) index tensors with rank[b, w] < rank[b, l].

    Args:
        ranks_BK: (B, K) rank of each response, lower is better; equal ranks are ties (no pair).
        mask_BK: (B, K) True where response k of ranking b exists (rankings of different K are padded).
    """
    valid = mask_BK.bool()
    better = ranks_BK[:, :, None] < ranks_BK[:, None, :]  # (B, K, K): response w ranked above response l
    pairs = better & valid[:, :, None] & valid[:, None, :]
    b, win, lose = pairs.nonzero(as_tuple=True)
    return b, win, lose


def kwise_ranking_loss(
    rewards_BK: torch.Tensor,
    ranks_BK: torch.Tensor,
    mask_BK: torch.Tensor,
    margin_BKK: torch.Tensor | None = None,
    center_coefficient: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """InstructGPT's K-wise loss: per ranking, the mean over its untied pairs of −log σ(r_w − r_l − m_wl)
    (+ λ·(r_w + r_l)² when `center_coefficient` λ > 0).

    Args:
        rewards_BK: (B, K) rewards, padded where `mask_BK` is False.
        ranks_BK: (B, K) lower is better; equal ranks are ties and give no pair.
        mask_BK: (B, K) which responses exist.
        margin_BKK: optional (B, K, K), margin_BKK[b, w, l] is the margin of the pair (w better than l).
    Returns:
        (loss_B, has_pairs_B, stats): per-ranking loss (0 where the ranking has no untied pair),
        whether each ranking has a pair (those are the counted elements), and detached per-pair
        `correct`, `margin` (r_w − r_l) and `ranking` (the ranking index of each pair).
    """
    b, win, lose = ranked_pairs(ranks_BK, mask_BK)
    winners, losers = rewards_BK[b, win], rewards_BK[b, lose]
    margin = margin_BKK[b, win, lose] if margin_BKK is not None else None
    pair_loss, stats = bradley_terry_loss(winners, losers, margin)
    if center_coefficient > 0:
        pair_loss = pair_loss + centring_loss(winners, losers, center_coefficient)
    batch = rewards_BK.shape[0]
    n_pairs = torch.bincount(b, minlength=batch)
    total = torch.zeros(batch, dtype=pair_loss.dtype, device=pair_loss.device).index_add(0, b, pair_loss)
    loss = total / n_pairs.clamp(min=1)  # 1/C(K,2) for a ranking without ties
    stats["ranking"] = b
    return loss, n_pairs > 0, stats
