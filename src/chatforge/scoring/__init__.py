"""Scorers: one interface for whatever scores a response (see docs/best_of_n.md).

    scorer = build_scorer(cfg)                      # cfg: one of the ScorerConfig kinds
    scorer.score(prompts, responses) -> list[float] # batched; a prompt is a record or a messages list

Kinds: `gold` (the task world's gold reward, or one of its parts), `check` (the world's binary
checker, 1.0/0.0), `function` (a user function by dotted path), `reward_model` (a Hugging Face
sequence classifier with one label), `combined` (weighted sum or Llama 2's safety gate, optional
whitening). Best-of-N, rejection sampling and RL use the same scorers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatforge.config.base import StrictModel
from chatforge.scoring.base import Prompt, Scorer, prompt_messages
from chatforge.scoring.config import (
    CheckScorerConfig,
    CombinedScorerConfig,
    FunctionScorerConfig,
    GoldScorerConfig,
    LeafScorerConfig,
    RewardModelScorerConfig,
    ScorerConfig,
)


class _ScorerSection(StrictModel):
    scorer: ScorerConfig


def _gold(cfg: GoldScorerConfig) -> Scorer:
    from chatforge.scoring.world import GoldScorer

    return GoldScorer(cfg)


def _check(cfg: CheckScorerConfig) -> Scorer:
    from chatforge.scoring.world import CheckScorer

    return CheckScorer(cfg)


def _function(cfg: FunctionScorerConfig) -> Scorer:
    from chatforge.scoring.function import FunctionScorer

    return FunctionScorer(cfg)


def _reward_model(cfg: RewardModelScorerConfig) -> Scorer:
    from chatforge.scoring.reward_model import RewardModelScorer

    return RewardModelScorer(cfg)


def _combined(cfg: CombinedScorerConfig) -> Scorer:
    from chatforge.scoring.combined import CombinedScorer

    return CombinedScorer(cfg, {name: build_scorer(sub) for name, sub in cfg.components.items()})


BUILDERS: dict[str, Callable[[Any], Scorer]] = {
    "gold": _gold,
    "check": _check,
    "function": _function,
    "reward_model": _reward_model,
    "combined": _combined,
}
"""kind -> builder; a test checks these keys against the configs' `kind` literals."""


def build_scorer(cfg: ScorerConfig | dict) -> Scorer:
    """The scorer a config describes (a dict is validated first; a missing `kind` means gold)."""
    if isinstance(cfg, dict):
        from chatforge.config.load import validate_config

        cfg = validate_config(_ScorerSection, {"scorer": cfg}).scorer
    return BUILDERS[cfg.kind](cfg)


__all__ = [
    "BUILDERS",
    "CheckScorerConfig",
    "CombinedScorerConfig",
    "FunctionScorerConfig",
    "GoldScorerConfig",
    "LeafScorerConfig",
    "Prompt",
    "RewardModelScorerConfig",
    "Scorer",
    "ScorerConfig",
    "build_scorer",
    "prompt_messages",
]
