"""Several scorers as one: a weighted sum, or Llama 2's safety gate; optional whitening of each part.

Safety gate (Llama 2, Touvron et al. 2023, arXiv:2307.09288, Sec. 3.2.3 "Proximal Policy
Optimization": the piecewise R_c inside the final reward R(g|p) = R~_c(g|p) - beta KL):

    R_c(g | p) = R_s(g | p)   if IS_SAFETY(p) or R_s(g | p) < 0.15
                 R_h(g | p)   otherwise

IS_SAFETY(p) here: the record has `unsafe: true` (field name `unsafe_field`) or a `task` or
`task_type` in `unsafe_tasks` (default `vault_secret`: the world's requests for the vault code, where
refusing is right; `vault` adds the harmless vault questions). A bare messages list is never
flagged, so only the threshold applies to it. The threshold compares the *raw* safety score; the
value returned is the component after whitening when `normalize` is on. Departure from the paper:
Llama 2 whitens LOGIT(R_c), the combined score of sigmoid-scaled reward models; here each
component is whitened on its own scale and no logit is taken (world scores are not probabilities).

Whitening: x -> (x - mean) / sqrt(var + 1e-8), with the population variance. `batch` uses the mean
and variance of the scores of the current `score` call; `running` updates a running mean and
variance with the call's scores first (Chan et al.'s parallel update, exact over all scores seen)
and uses those; `state_dict()` / `load_state_dict()` keep that state across runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from chatforge.scoring.base import Prompt, Scorer, check_pairs
from chatforge.scoring.config import CombinedScorerConfig

EPS = 1e-8


class RunningMoments:
    """Count, mean and sum of squared deviations of every value seen (exact, order independent)."""

    def __init__(self, count: int = 0, mean: float = 0.0, m2: float = 0.0):
        self.count, self.mean, self.m2 = count, mean, m2

    def update(self, values: Sequence[float]) -> None:
        if not values:
            return
        n = len(values)
        batch_mean = sum(values) / n
        batch_m2 = sum((v - batch_mean) ** 2 for v in values)
        total = self.count + n
        delta = batch_mean - self.mean
        self.m2 += batch_m2 + delta * delta * self.count * n / total
        self.mean += delta * n / total
        self.count = total

    @property
    def var(self) -> float:
        return self.m2 / self.count if self.count else 0.0

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}


def whiten(values: Sequence[float], mean: float, var: float) -> list[float]:
    scale = 1.0 / math.sqrt(var + EPS)
    return [(v - mean) * scale for v in values]


def batch_whiten(values: Sequence[float]) -> list[float]:
    moments = RunningMoments()
    moments.update(values)
    return whiten(values, moments.mean, moments.var)


def is_unsafe_prompt(prompt: Prompt, cfg: CombinedScorerConfig) -> bool:
    """IS_SAFETY(p): the record says so (`unsafe_field` true, or a task or task_type in `unsafe_tasks`)."""
    if not isinstance(prompt, Mapping):
        return False
    if prompt.get(cfg.unsafe_field) is True:
        return True
    return prompt.get("task") in cfg.unsafe_tasks or prompt.get("task_type") in cfg.unsafe_tasks


class CombinedScorer:
    def __init__(self, cfg: CombinedScorerConfig, components: dict[str, Scorer]):
        self.cfg = cfg
        self.components = components
        self.moments = {name: RunningMoments() for name in components}

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        check_pairs(prompts, responses)
        raw = {name: scorer.score(prompts, responses) for name, scorer in self.components.items()}
        scores = {name: self._normalize(name, values) for name, values in raw.items()}
        if self.cfg.rule == "weighted_sum":
            return [
                sum(self.cfg.weights.get(name, 1.0) * scores[name][i] for name in scores) for i in range(len(responses))
            ]
        safety, helpful = self.cfg.safety, self.cfg.helpfulness
        return [
            scores[safety][i]
            if is_unsafe_prompt(p, self.cfg) or raw[safety][i] < self.cfg.safety_threshold
            else scores[helpful][i]
            for i, p in enumerate(prompts)
        ]

    def _normalize(self, name: str, values: list[float]) -> list[float]:
        if self.cfg.normalize == "batch":
            return batch_whiten(values)
        if self.cfg.normalize == "running":
            moments = self.moments[name]
            moments.update(values)
            return whiten(values, moments.mean, moments.var)
        return values

    def state_dict(self) -> dict[str, dict[str, float]]:
        return {name: m.state_dict() for name, m in self.moments.items()}

    def load_state_dict(self, state: dict[str, dict[str, float]]) -> None:
        for name, values in state.items():
            self.moments[name] = RunningMoments(int(values["count"]), float(values["mean"]), float(values["m2"]))
