"""Elastic weight consolidation (Kirkpatrick et al., 2017): a quadratic pull towards the old task's weights.

    penalty(θ) = λ/2 · Σ_i F_i (θ_i − θ*_i)²

θ* are the weights after the old task, F the diagonal of the Fisher information of the old task's
data at θ* (how sharply the old task's log-likelihood curves along each weight). A weight the old
task barely uses (F ≈ 0) moves freely; one it depends on is held near its old value. The penalty
is a Laplace approximation of the old task's log-posterior, so with F measured per example λ plays
the part of "how many old examples the anchor is worth".

Pure functions of tensors: the Fisher is measured in `chatforge.engine.ewc`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def ewc_penalty(
    params: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor], fishers: Sequence[torch.Tensor], weight: float
) -> torch.Tensor:
    """λ/2 · Σ F (θ − θ*)² over matching tensors, as a float32 scalar differentiable in `params`.

    Args:
        params: the current weights θ (any shapes).
        anchors: θ*, one tensor per param, same shape (no gradient flows into them).
        fishers: F ≥ 0, one tensor per param, same shape.
        weight: λ ≥ 0.
    """
    if not len(params) == len(anchors) == len(fishers):
        raise ValueError(f"ewc_penalty: {len(params)} params, {len(anchors)} anchors, {len(fishers)} Fisher tensors")
    if weight < 0:
        raise ValueError(f"ewc_penalty: weight must be >= 0, got {weight}")
    if not params:
        return torch.zeros(())
    total = torch.zeros((), device=params[0].device, dtype=torch.float32)
    for theta, anchor, fisher in zip(params, anchors, fishers):
        if theta.shape != anchor.shape or theta.shape != fisher.shape:
            raise ValueError(f"ewc_penalty: shapes differ: param {tuple(theta.shape)}, anchor "
                             f"{tuple(anchor.shape)}, Fisher {tuple(fisher.shape)}")
        delta = theta.float() - anchor.detach().float()
        total = total + (fisher.detach().float() * delta * delta).sum()
    return 0.5 * weight * total
