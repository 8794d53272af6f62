"""Held-out reward-model metrics (RewardBench-style accuracy, agreement with the gold reward).

Pairs:
- `accuracy`: share of pairs with r(chosen) > r(rejected) (a tie counts as wrong, as in RewardBench),
  overall, per `category` (helpfulness / safety in the task world) and per rejected `kind`.
- `gold_agreement`: over pairs whose gold rewards differ, the share where the RM orders the two as
  the gold reward does (equal to `accuracy` when the labels come from the gold reward, as in the
  world; different for labels from people).
Rankings:
- `pair_accuracy`: share of the K(K−1)/2 ordered pairs of each ranking the RM orders correctly;
  `top1`: share of rankings whose best response gets the highest reward;
  `kendall_tau`: Kendall τ-b between RM scores and the ranking within each ranking, averaged.
- `spearman_gold`, `kendall_gold`: rank correlation of RM scores with gold rewards pooled over all
  held-out responses of all prompts; unlike the within-ranking numbers this needs rewards that are
  comparable across prompts (which the pairwise loss does not ask for; centring is meant to help).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from chatforge.rm.data import Group, Packing, collate, iter_chunks
from chatforge.rm.model import rewards_of


@torch.no_grad()
def score_groups(model: torch.nn.Module, groups: list[Group], pad_id: int, batch_size: int,
                 packing: Packing = "pad") -> list[list[float]]:
    """The reward of every response of every group, `batch_size` groups per forward (groups of
    similar length batched together, so little of the forward is padding), `packing` as in `collate`."""
    device = next(model.parameters()).device
    order = sorted(range(len(groups)), key=lambda i: max(len(ids) for ids in groups[i].input_ids))
    out: list[list[float]] = [[] for _ in groups]
    for chunk in iter_chunks(order, batch_size):
        batch = collate([groups[i] for i in chunk], pad_id, packing)
        rewards = rewards_of(model, {k: v.to(device) for k, v in batch.items()}).cpu().tolist()
        begin = 0
        for i in chunk:
            out[i] = rewards[begin : begin + len(groups[i].responses)]
            begin += len(groups[i].responses)
    return out


def reward_metrics(groups: list[Group], scores: list[list[float]]) -> dict[str, float]:
    """Pair metrics under `pairs/`, ranking metrics under `rankings/` (see the module docstring)."""
    metrics: dict[str, float] = {}
    pairs = [(g, s) for g, s in zip(groups, scores) if g.is_pair]
    rankings = [(g, s) for g, s in zip(groups, scores) if not g.is_pair]
    if pairs:
        metrics.update(_pair_metrics(pairs))
    if rankings:
        metrics.update(_ranking_metrics(rankings))
    return metrics


def _pair_metrics(pairs: list[tuple[Group, list[float]]]) -> dict[str, float]:
    correct: dict[str, list[float]] = defaultdict(list)
    agree, gold_r, model_r = [], [], []
    for g, (chosen, rejected) in pairs:
        hit = float(chosen > rejected)
        correct[""].append(hit)
        if g.category:
            correct[f"/category/{g.category}"].append(hit)
        if g.kind:
            correct[f"/kind/{g.kind}"].append(hit)
        if g.gold is not None:
            gold_r += g.gold
            model_r += [chosen, rejected]
            if g.gold[0] != g.gold[1]:
                agree.append(float((chosen - rejected) * (g.gold[0] - g.gold[1]) > 0))
    out = {f"pairs/accuracy{key}": sum(v) / len(v) for key, v in sorted(correct.items())}
    out["pairs/count"] = float(len(pairs))
    if agree:
        out["pairs/gold_agreement"] = sum(agree) / len(agree)
    if gold_r:
        out["pairs/spearman_gold"] = spearman(model_r, gold_r)
    return out


def _ranking_metrics(rankings: list[tuple[Group, list[float]]]) -> dict[str, float]:
    hits, top1, taus, gold_r, model_r = [], [], [], [], []
    by_category: dict[str, list[float]] = defaultdict(list)
    for g, s in rankings:
        ordered = [(i, j) for i in range(len(s)) for j in range(len(s)) if g.ranks[i] < g.ranks[j]]
        mine = [float(s[i] > s[j]) for i, j in ordered]
        hits += mine
        if g.category:
            by_category[g.category] += mine
        best = min(g.ranks)
        top1.append(float(g.ranks[max(range(len(s)), key=lambda k: s[k])] == best))
        taus.append(kendall_tau(s, [-r for r in g.ranks]))
        if g.gold is not None:
            gold_r += g.gold
            model_r += s
    out = {
        "rankings/pair_accuracy": sum(hits) / max(len(hits), 1),
        "rankings/top1": sum(top1) / len(top1),
        "rankings/kendall_tau": sum(taus) / len(taus),
        "rankings/count": float(len(rankings)),
    }
    for name, values in sorted(by_category.items()):
        out[f"rankings/pair_accuracy/category/{name}"] = sum(values) / len(values)
    if gold_r:
        out["rankings/spearman_gold"] = spearman(model_r, gold_r)
        out["rankings/kendall_gold"] = kendall_tau(model_r, gold_r)
    return out


def average_ranks(values: list[float]) -> torch.Tensor:
    """1-based ranks, ties sharing the mean of their positions (as scipy.stats.rankdata)."""
    x = torch.tensor(values, dtype=torch.float64)
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(1, len(x) + 1, dtype=torch.float64)
    for value in torch.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman ρ: the Pearson correlation of the average ranks (0 when either side is constant)."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denom if denom > 0 else 0.0


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall τ-b = (concordant − discordant) / sqrt((n0 − ties_a)(n0 − ties_b)) over all pairs."""
    x, y = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    dx = torch.sign(x[:, None] - x[None, :]).triu(1)
    dy = torch.sign(y[:, None] - y[None, :]).triu(1)
    s = float((dx * dy).sum())
    untied_x, untied_y = float((dx != 0).sum()), float((dy != 0).sum())
    denom = (untied_x * untied_y) ** 0.5
    return s / denom if denom > 0 else 0.0
