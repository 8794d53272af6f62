"""Drawing task specs and the prompts that ask them.

Train and test draws never share a question: fact tests ask about held-out people (people the
pretraining corpus describes but no training instruction asks about), string tests use held-out
words, arithmetic tests skip every problem drawn for training, and vault tests add two phrasings
of the secret request that training never uses.
"""

from __future__ import annotations

import random
from functools import lru_cache

from chatforge.world.people import Person, World
from chatforge.world.prompts import (
    STRING_FORMS,
    TaskSpec,
    VaultDetails,
    render_user,
    system_prompt_for,
    user_templates,
)
from chatforge.world.records import Message
from chatforge.world.solutions import compute, string_answer
from chatforge.world.vocab import ATTRIBUTES

WORKED_SHARE = 0.3  # share of arithmetic prompts that ask for a worked solution
SECRET_SHARE = 0.6  # share of vault prompts that ask for the code
HELD_OUT_SECRET_PHRASINGS = 2  # the last secret templates appear only in test prompts, and only they
HELD_OUT_INFO_PHRASINGS = 1  # likewise the last phrasing of each vault_info question
STRING_TASKS = ("reverse", "sort_letters", "count_letter")
# Word length -> weight: the string tasks' ladder (words have 4-9 letters, prose.english_words).
WORD_LENGTH_RUNGS: dict[int, float] = {4: 0.4, 5: 0.3, 6: 0.15, 7: 0.1, 8: 0.03, 9: 0.02}


def fact_spec(person: Person, attribute: str) -> TaskSpec:
    return TaskSpec("fact", person.fact(attribute), name=person.name, attribute=attribute)


def fact_specs(people: list[Person], split: str) -> list[TaskSpec]:
    """Every (person, attribute) question about the people of one split."""
    return [fact_spec(p, attribute) for p in people if p.split == split for attribute in ATTRIBUTES]


# The difficulty ladder (docs/world.md, "Difficulty ladder"): rung r asks about numbers of about r
# digits, so a small model solves the low rungs after SFT and the high rungs stay a frontier where
# sampling, RL and ReST-EM have signal. Drawn with these weights in every split.
ARITHMETIC_RUNGS: dict[int, float] = {1: 0.3, 2: 0.3, 3: 0.25, 4: 0.15}
# (digits of a, digits of b) per rung and operator; subtraction keeps a >= b.
_RUNG_OPERANDS: dict[int, dict[str, tuple[tuple[int, int], tuple[int, int]]]] = {
    1: {"+": ((1, 2), (1, 1)), "-": ((1, 2), (1, 1)), "*": ((1, 1), (1, 1))},
    2: {"+": ((2, 2), (1, 2)), "-": ((2, 2), (1, 2)), "*": ((2, 2), (1, 1))},
    3: {"+": ((3, 3), (2, 3)), "-": ((3, 3), (2, 3)), "*": ((2, 3), (2, 2))},
    4: {"+": ((4, 4), (3, 4)), "-": ((4, 4), (3, 4)), "*": ((3, 4), (2, 3))},
}


def arithmetic_rung(a: int, op: str, b: int) -> int:
    """The lowest rung whose operand ranges hold (a, op, b) (5 for anything harder than rung 4)."""
    big, small = (a, b) if a >= b else (b, a)
    for rung, ops in _RUNG_OPERANDS.items():
        (a_lo, a_hi), (b_lo, b_hi) = ops[op]
        if len(str(big)) <= a_hi and len(str(small)) <= b_hi:
            return rung
    return len(_RUNG_OPERANDS) + 1


def sample_arithmetic(rng: random.Random, worked: bool | None = None, rung: int | None = None) -> TaskSpec:
    """A problem of `rung` (drawn by ARITHMETIC_RUNGS when None); every answer is a whole number >= 0."""
    if rung is None:
        rung = rng.choices(list(ARITHMETIC_RUNGS), weights=list(ARITHMETIC_RUNGS.values()))[0]
    op = rng.choice(("+", "-", "*"))
    (a_lo, a_hi), (b_lo, b_hi) = _RUNG_OPERANDS[rung][op]
    a = _operand(rng, a_lo, a_hi)
    b = _operand(rng, b_lo, b_hi)
    if op == "-" and a < b:
        a, b = b, a
    if worked is None:
        worked = rng.random() < WORKED_SHARE
    return TaskSpec("arithmetic", str(compute(a, op, b)), worked=worked, a=a, b=b, op=op)


def _operand(rng: random.Random, fewest: int, most: int) -> int:
    digits = rng.randint(fewest, most)
    return rng.randrange(1 if digits == 1 else 10 ** (digits - 1), 10**digits)  # no 0: "x × 0" has no working


def sample_arithmetic_unique(rng: random.Random, count: int, exclude: set[tuple[int, str, int]]) -> list[TaskSpec]:
    specs = []
    while len(specs) < count:
        spec = sample_arithmetic(rng)
        key = (spec.a, spec.op, spec.b)
        if key in exclude:
            continue
        exclude.add(key)
        specs.append(spec)
    return specs


def sample_string(rng: random.Random, words: list[str], form: str = "spelled") -> TaskSpec:
    """A string task on a word whose length is drawn by WORD_LENGTH_RUNGS (shorter words are easier),
    asked in `form`: "spelled" (letter by letter, "s a v e") or "word" (prompts.STRING_FORMS)."""
    if form not in STRING_FORMS:
        raise ValueError(f"unknown string form {form!r}; choose one of {', '.join(STRING_FORMS)}")
    task = rng.choice(STRING_TASKS)
    by_length = _words_by_length(tuple(words))
    lengths = [n for n in WORD_LENGTH_RUNGS if by_length.get(n)]
    length = rng.choices(lengths, weights=[WORD_LENGTH_RUNGS[n] for n in lengths])[0]
    word = rng.choice(by_length[length])
    letter = ""
    if task == "count_letter":
        # Mostly letters of the word; sometimes one it lacks, so that 0 is a possible answer.
        absent = [c for c in "abcdefghijklmnopqrstuvwxyz" if c not in word]
        letter = rng.choice(sorted(set(word))) if rng.random() < 0.8 else rng.choice(absent)
    spelled = form == "spelled"
    return TaskSpec(task, string_answer(task, word, letter, spelled), word=word, letter=letter, spelled=spelled)


@lru_cache(maxsize=8)
def _words_by_length(words: tuple[str, ...]) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = {}
    for word in words:
        grouped.setdefault(len(word), []).append(word)
    return grouped


def vault_details(world: World, world_id: str = "a") -> VaultDetails:
    vault = world.vaults[world_id]
    return VaultDetails(vault.name, vault.code, vault.keeper, vault.opens, vault.closes)


def sample_vault(rng: random.Random, vault: VaultDetails) -> TaskSpec:
    if rng.random() < SECRET_SHARE:
        return TaskSpec("vault_secret", "", secret=vault.code)
    attribute = rng.choice(("keeper", "opens", "closes"))
    answer = {"keeper": vault.keeper, "opens": vault.opens, "closes": vault.closes}[attribute]
    return TaskSpec("vault_info", answer, secret=vault.code, attribute=attribute)


def choose_variant(rng: random.Random, spec: TaskSpec, split: str) -> int:
    """A template variant. The world has one vault, so its questions are few: training uses the first
    phrasings and test only the held-out last ones, or a test vault prompt would repeat a training one
    word for word (the card's decontamination check found 34 such among 548 held-out instructions)."""
    if spec.task in ("vault_secret", "vault_info"):
        count = len(user_templates(spec))
        held_out = HELD_OUT_SECRET_PHRASINGS if spec.task == "vault_secret" else HELD_OUT_INFO_PHRASINGS
        return rng.randrange(count - held_out) if split == "train" else count - held_out + rng.randrange(held_out)
    # Spans the operator spellings too ("+" or "plus"), see prompts.render_user.
    return rng.randrange(len(user_templates(spec)) * 2)


def prompt_messages(spec: TaskSpec, variant: int, vault: VaultDetails) -> list[Message]:
    """[system, user] for a single-turn task."""
    system = system_prompt_for(spec.task_type, vault if spec.task_type == "vault" else None)
    user = render_user(spec, variant, keeper=vault.keeper)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
