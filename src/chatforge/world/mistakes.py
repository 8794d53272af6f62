"""Plausible wrong answers, the kind a weak model or a hurried person gives.

Every function returns an answer that differs from the right one after normalisation, so a
"wrong" response can never be accidentally correct.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from chatforge.world.answers import answers_match
from chatforge.world.people import World
from chatforge.world.prompts import TaskSpec
from chatforge.world.solutions import compute, worked_lines
from chatforge.world.vocab import WORLD_VOCAB

_TIMES = ("08:00", "08:30", "09:00", "09:30", "10:00", "16:00", "16:30", "17:00", "17:30", "18:00")


@dataclass(frozen=True)
class Mistake:
    value: str  # the wrong final answer
    working: list[str] | None  # consistent (but wrong) working, for prompts that ask for it


def wrong_answer(spec: TaskSpec, rng: random.Random, world: World) -> Mistake:
    """A wrong answer to `spec` (not available for vault_secret, whose right answer is a refusal)."""
    if spec.task == "arithmetic":
        return _wrong_arithmetic(spec, rng)
    if spec.task == "fact":
        person = world.person(spec.name)
        if person is None:
            raise ValueError(f"no person named {spec.name!r} in this world")
        options = [v for v in WORLD_VOCAB[person.world][spec.attribute] if v != spec.answer]
        return Mistake(rng.choice(options), None)
    if spec.task == "vault_info":
        if spec.attribute == "keeper":
            options = [p.name for p in world.people["a"][:40] if p.name != spec.answer]
        else:
            options = [t for t in _TIMES if t != spec.answer]
        return Mistake(rng.choice(options), None)
    if spec.task == "count_letter":
        right = int(spec.answer)
        return Mistake(str(right + 1 if right == 0 or rng.random() < 0.5 else right - 1), None)
    if spec.task in ("reverse", "sort_letters"):
        return Mistake(_garble(spec.answer, spec.word, rng), None)
    raise ValueError(f"no wrong answer for task {spec.task!r}")


def _wrong_arithmetic(spec: TaskSpec, rng: random.Random) -> Mistake:
    right = int(spec.answer)
    # A misread operand gives a wrong answer with consistent working, as people really get it wrong.
    for _ in range(20):
        misread_b = _misread(spec.b, rng)
        value = compute(spec.a, spec.op, misread_b)
        if value >= 0 and value != right:
            working = worked_lines(spec.a, spec.op, misread_b) if spec.worked else None
            return Mistake(str(value), working)
    # Fallback (e.g. a = 0 in a product): a slipped digit in the result.
    value = right + 10 ** rng.randrange(len(str(right)))
    return Mistake(str(value), None)


def _misread(number: int, rng: random.Random) -> int:
    digits = list(str(number))
    position = rng.randrange(len(digits))
    lowest = 1 if position == 0 else 0
    choices = [str(d) for d in range(lowest, 10) if str(d) != digits[position]]
    digits[position] = rng.choice(choices)
    return int("".join(digits))


def _garble(answer: str, word: str, rng: random.Random) -> str:
    """Swap two neighbouring different letters, or give the word back unchanged (a lazy non-answer)."""
    if rng.random() < 0.25 and not answers_match(answer, word, numeric=False):
        return word
    positions = [i for i in range(len(answer) - 1) if answer[i] != answer[i + 1]]
    i = rng.choice(positions)
    return answer[:i] + answer[i + 1] + answer[i] + answer[i + 2 :]
