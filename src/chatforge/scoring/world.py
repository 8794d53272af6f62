"""The built-in task world as generic code sees it: the gold reward and the binary checker as scorers,
and the checker, the majority-vote answer key and the gold parts as functions. Generic modules
(evaluation, dynamics, dpo) reach the world only through here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from chatforge.errors import ChatforgeError, DataError
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


def is_verifiable(record: Mapping) -> bool:
    """A world verifiable record: a task with a checker and its `answer`."""
    from chatforge.world.verifiable import VERIFIABLE_TASKS

    return record.get("task") in VERIFIABLE_TASKS and "answer" in record


def world_correct(record: Mapping, response: str) -> bool:
    """The task world's binary checker: a verifiable record (`task` + `answer`) by its answer, any other
    record by the instruction checker on its prompt (`prompt`, or `messages` without the reference)."""
    from chatforge.world.reward import check_answer
    from chatforge.world.verifiable import check

    if is_verifiable(record):
        return check(record, response)
    if "prompt" not in record and not isinstance(record.get("messages"), list):
        raise DataError(f"{record.get('_where', '?')}: checker world needs `task` + `answer`, or `messages`")
    return check_answer(prompt_messages(record), response)


def instruction_correct(prompt: list[dict], response: str) -> bool:
    """The world's instruction checker: the final answer of `response` to the world task `prompt` asks."""
    from chatforge.world.reward import check_answer

    return check_answer(prompt, response)


def final_answer_key(record: Mapping, response: str) -> str | None:
    """What majority vote compares: the world's final answer, normalised (numbers as integers)."""
    from chatforge.world.answers import extract_final_answer, normalise, parse_number
    from chatforge.world.prompts import NUMERIC_TASKS

    answer = extract_final_answer(response)
    if answer is None or not answer.strip():
        return None
    if str(record.get("task", "")) in NUMERIC_TASKS:
        number = parse_number(answer)
        return None if number is None else str(number)
    return normalise(answer)


def final_answer_in(answers: list, response: str) -> bool:
    """Whether the response, or its final answer, is one of `answers` (an `answers` checker)."""
    from chatforge.world.answers import extract_final_answer

    wanted = {str(a).strip() for a in answers}
    final = extract_final_answer(response)
    return response.strip() in wanted or (final is not None and final.strip() in wanted)


def gold_parts(prompt: Prompt, response: str, world=None):
    """The gold reward's parts (total, correctness, ...) of `response`; ChatforgeError for a prompt
    that is not a world task."""
    from chatforge.world.reward import gold_reward_parts

    return gold_reward_parts(prompt, response, world)
