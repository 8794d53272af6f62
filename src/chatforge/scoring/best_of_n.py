"""Best-of-N from one set of samples: the unbiased estimator and the analytic KL. Stdlib only.

Given M samples of one prompt with proxy scores s_1..s_M, best-of-N (N <= M) draws N samples and
keeps the one with the highest proxy score. Its expected value of any quantity v (gold reward,
proxy reward, correctness) is estimated without bias from the M samples as the average over all
C(M, N) subsets of N. With the samples sorted by proxy score, best first, the i-th best (i = 1..M)
is the best of a uniformly random N-subset exactly when the subset holds it and N-1 of the M-i
samples below it:

    P(i-th best is chosen) = C(M-i, N-1) / C(M, N)

Ties. When proxy scores tie, the chosen sample is drawn uniformly among the tied best of the subset.
That equals breaking ties by a uniformly random order of the tied samples, so each tied sample gets
the mean of the probabilities of the ranks the group occupies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def selection_probabilities(proxy: Sequence[float], n: int) -> list[float]:
    """P(sample j is the one best-of-`n` keeps), for each sample j in the input order; sums to 1."""
    m = len(proxy)
    if not 1 <= n <= m:
        raise ValueError(f"best-of-n needs 1 <= n <= number of samples, got n={n} with {m} samples")
    order = sorted(range(m), key=lambda j: -proxy[j])
    total = math.comb(m, n)
    by_rank = [math.comb(m - 1 - r, n - 1) / total for r in range(m)]  # rank r = 0 is the best
    probs = [0.0] * m
    start = 0
    while start < m:  # spread each group of tied scores' rank probabilities evenly over the group
        end = start
        while end + 1 < m and proxy[order[end + 1]] == proxy[order[start]]:
            end += 1
        share = sum(by_rank[start : end + 1]) / (end - start + 1)
        for r in range(start, end + 1):
            probs[order[r]] = share
        start = end + 1
    return probs


def expected_best_of_n(proxy: Sequence[float], values: Sequence[float], n: int) -> float:
    """Unbiased estimate of E[value of the best-of-`n` sample] from the samples' proxy scores and values."""
    if len(values) != len(proxy):
        raise ValueError(f"{len(proxy)} proxy scores but {len(values)} values")
    return sum(p * v for p, v in zip(selection_probabilities(proxy, n), values))


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || base) = log n - (n-1)/n nats (Stiennon et al. 2020; Gao et al. 2023, arXiv:2210.10760).

    Exact when the proxy scores of the base policy's samples never tie (a continuous score); with
    ties or repeated samples it is an upper bound (Beirami et al. 2024, arXiv:2401.01879)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def n_grid(n_max: int) -> list[int]:
    """1, 2, 4, ... up to `n_max`, and `n_max` itself when it is not a power of two."""
    grid, n = [], 1
    while n <= n_max:
        grid.append(n)
        n *= 2
    if grid[-1] != n_max:
        grid.append(n_max)
    return grid
