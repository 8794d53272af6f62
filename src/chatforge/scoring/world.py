"""Scorers from the built-in task world: the programmatic gold reward and the binary checker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from chatforge.errors import ChatforgeError
from chatforge.scoring.base import Prompt, check_pairs, prompt_messages
from chatforge.scoring.config import CheckScorerConfig, GoldScorerConfig


class GoldScorer:
    """`chatforge.world.reward.gold_reward_parts`: the total in [-1, 1], or one of its parts."""

    def __init__(self, cfg: GoldScorerConfig):
        from chatforge.world.people import load_world

        self.part = cfg.part
        self.world = load_world(cfg.world) if cfg.world else None

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        from chatforge.world.reward import gold_reward_parts

        check_pairs(prompts, responses)
        return [
            float(getattr(gold_reward_parts(prompt_messages(p), r, self.world), self.part))
            for p, r in zip(prompts, responses)
        ]


class CheckScorer:
    """`chatforge.world.verifiable.check`: 1.0 when the final answer equals the record's `answer`, else 0.0."""

    def __init__(self, cfg: CheckScorerConfig | None = None):
        pass

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        from chatforge.world.verifiable import check

        check_pairs(prompts, responses)
        out = []
        for p, r in zip(prompts, responses):
            if not isinstance(p, Mapping) or "task" not in p or "answer" not in p:
                raise ChatforgeError(
                    "scorer check: needs records with 'task' and 'answer' (world verifiable prompts), "
                    f"got {'a record without them' if isinstance(p, Mapping) else 'a bare messages list'}"
                )
            out.append(1.0 if check(p, r) else 0.0)
        return out
