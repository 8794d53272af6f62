"""Plausible wrong answers, the kind a weak model or a hurried person gives.

Every function returns an answer that differs from the right one after normalisation, so a
"wrong" response can never be accidentally correct.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from chatforge.world.answers import answers_match
from chatforge.world.people import World
from chatforge.world.prompts import LETTER_SEPARATOR, TaskSpec, spell, unspell
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
        return Mistake(_garble(spec, rng), None)
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


def _garble(spec: TaskSpec, rng: random.Random) -> str:
    """Swap two neighbouring different letters, or give the word back unchanged (a lazy non-answer).

    Spelled answers are garbled letter by letter and spelled again, so a wrong one is still a
    well-formed spelled string ("s g n i a v s"), never a separator moved out of place.
    """
    letters = unspell(spec.answer) if spec.spelled else spec.answer
    joiner = LETTER_SEPARATOR if spec.spelled else ""
    if rng.random() < 0.25 and letters != spec.word:
        return joiner.join(spec.word)
    positions = [i for i in range(len(letters) - 1) if letters[i] != letters[i + 1]]
    i = rng.choice(positions)
    return joiner.join(letters[:i] + letters[i + 1] + letters[i] + letters[i + 2 :])


def novice_mistake(spec: TaskSpec, rng: random.Random, world: World) -> Mistake:
    """The novice source's wrong answer: one fixed bug per task, so the errors are learnable.

    Arithmetic without carries or borrows (each column on its own, mod 10; a product by the last
    digit of b only), the most common value of the attribute for facts, the word unchanged for
    reverse and sort_letters, the word's length for count_letter. A model trained on the novice's
    answers can pick the bug up, which is what a source-conditioned learner (C-RLFT) must avoid;
    a random slip (wrong_answer) would only add noise. Where the bug happens to give the right
    answer (no carry), a random slip is used so the novice is still wrong.
    """
    value = _novice_value(spec, world)
    if value is not None and not answers_match(spec.answer, value, numeric=spec.task in ("arithmetic", "count_letter")):
        working = None
        if spec.task == "arithmetic" and spec.worked:
            working = [f"Each column on its own: {spec.a} {'×' if spec.op == '*' else spec.op} {spec.b} = {value}."]
        return Mistake(value, working)
    return wrong_answer(spec, rng, world)


def _novice_value(spec: TaskSpec, world: World) -> str | None:
    if spec.task == "arithmetic":
        a, b = spec.a, spec.b
        if spec.op == "*":
            return str(a * (b % 10))
        width = max(len(str(a)), len(str(b)))
        digits = [(a // 10**i) % 10 for i in range(width)], [(b // 10**i) % 10 for i in range(width)]
        column = (lambda x, y: (x + y) % 10) if spec.op == "+" else (lambda x, y: abs(x - y))
        return str(int("".join(str(column(x, y)) for x, y in zip(*digits))[::-1]))
    if spec.task == "fact":
        person = world.person(spec.name)
        if person is None:
            raise ValueError(f"no person named {spec.name!r} in this world")
        counts: dict[str, int] = {}
        for other in world.people[person.world]:
            counts[other.fact(spec.attribute)] = counts.get(other.fact(spec.attribute), 0) + 1
        ranked = sorted(counts, key=lambda v: (-counts[v], v))
        return ranked[0] if ranked[0] != spec.answer else ranked[1]
    if spec.task in ("reverse", "sort_letters"):
        return spell(spec.word) if spec.spelled else spec.word
    if spec.task == "count_letter":
        return str(len(spec.word))
    return None
