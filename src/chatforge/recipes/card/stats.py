"""Standard errors of the report card's figures: means, proportions and ratios of sums.

Every figure is a mean over independent items (questions, prompts, pairs, documents), so its
standard error is the items' sample standard deviation over sqrt(n). Bits-per-byte is a ratio of two
sums (nats over bytes, pooled over documents); its standard error is the delta-method one of a
ratio estimator, with documents as the independent units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def sem(values: Sequence[float]) -> float:
    """sd / sqrt(n) with the n-1 sample variance; nan for fewer than two values."""
    n = len(values)
    if n < 2:
        return math.nan
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1) / n)


def mean_sem(values: Sequence[float]) -> tuple[float, float, int]:
    return mean(values), sem(values), len(values)


def proportion_sem(p: float, n: int) -> float:
    """The sem of n 0/1 values whose mean is p: sqrt(p (1 - p) / (n - 1)), equal to `sem` of the values."""
    if n < 2 or math.isnan(p):
        return math.nan
    return math.sqrt(p * (1.0 - p) / (n - 1))


def ratio_sem(numerators: Sequence[float], denominators: Sequence[float]) -> tuple[float, float]:
    """R = sum(a) / sum(b) and its delta-method standard error over the n units:
    sqrt( sum((a_i - R b_i)^2) / (n (n - 1)) ) / mean(b)."""
    n = len(numerators)
    total_b = sum(denominators)
    ratio = sum(numerators) / total_b
    if n < 2:
        return ratio, math.nan
    residual = sum((a - ratio * b) ** 2 for a, b in zip(numerators, denominators))
    return ratio, math.sqrt(residual / (n * (n - 1))) / (total_b / n)
