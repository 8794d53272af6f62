"""The reward-model objective: every response of the micro-batch's groups in ONE forward, then the loss.

- `bt`: every ordered pair of every group is its own element (a world pair is one pair, a ranking
  of K gives K(K−1)/2 elements); the engine divides by the number of pairs.
- `kwise`: every group is one element, its loss the mean over its pairs (InstructGPT eq. 1); the
  engine divides by the number of groups. On pairs alone the two are the same loss.

The margin of a pair (w better than l) is `margin_scale · max(gold_w − gold_l, 0)` when a scale is
set (Llama 2's margin from the preference's strength; here the gold-reward difference), else none.
"""

from __future__ import annotations

from typing import Literal

import torch

from chatforge.engine.loop import StepOutput
from chatforge.losses.reward import bradley_terry_loss, centring_loss, kwise_ranking_loss, ranked_pairs
from chatforge.rm.model import rewards_of

Loss = Literal["bt", "kwise"]


class RMObjective:
    def __init__(self, loss: Loss, margin_scale: float | None = None, center_coefficient: float = 0.0):
        self.loss, self.margin_scale, self.center = loss, margin_scale, center_coefficient

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        rewards_N = rewards_of(model, batch)
        ranks_BK, mask_BK = batch["ranks"], batch["slot_mask"]
        rewards_BK = rewards_N.new_zeros(ranks_BK.shape)
        rewards_BK[batch["row_group"], batch["row_slot"]] = rewards_N
        margin_BKK = None
        if self.margin_scale is not None:
            gold = batch["gold"]
            # A label that disagrees with the gold reward would give a negative margin (an easier
            # pair than none); Llama 2's margins are never negative, so clamp at 0.
            margin_BKK = self.margin_scale * (gold[:, :, None] - gold[:, None, :]).clamp(min=0)
        b, win, lose = ranked_pairs(ranks_BK, mask_BK)
        winners, losers = rewards_BK[b, win], rewards_BK[b, lose]
        pair_loss, stats = bradley_terry_loss(winners, losers, margin_BKK[b, win, lose] if margin_BKK is not None else None)
        center = centring_loss(winners, losers, self.center)
        if self.loss == "kwise":
            loss_B, has_pairs, _ = kwise_ranking_loss(rewards_BK, ranks_BK, mask_BK, margin_BKK, self.center)
            out = StepOutput(loss_B.sum(), has_pairs.sum())
        else:
            out = StepOutput((pair_loss + center).sum(), torch.tensor(b.numel(), device=b.device))
        n_pairs = torch.tensor(float(b.numel()), device=b.device)
        out.ratios["accuracy"] = (stats["correct"].sum(), n_pairs)
        out.ratios["rewards/margin"] = (stats["margin"].sum(), n_pairs)
        out.ratios["loss/pairwise"] = (pair_loss.detach().sum(), n_pairs)
        if self.center > 0:
            out.ratios["loss/center"] = (center.detach().sum(), n_pairs)
        n_rows = torch.tensor(float(rewards_N.numel()), device=b.device)
        out.ratios["rewards/mean"] = (rewards_N.detach().sum(), n_rows)
        out.ratios["rewards/abs"] = (rewards_N.detach().abs().sum(), n_rows)
        out.tokens = int(batch["lengths"].sum())  # real tokens, without padding
        return out
