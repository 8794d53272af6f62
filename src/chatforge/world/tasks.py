"""Drawing task specs and the prompts that ask them.

Train and test draws never share a question: fact tests ask about held-out people (people the
pretraining corpus describes but no training instruction asks about), string tests use held-out
words, arithmetic tests skip every problem drawn for training, and vault tests add two phrasings
of the secret request that training never uses.
"""

from __future__ import annotations

import random

from chatforge.world.people import Person, World
from chatforge.world.prompts import (
    VAULT_SECRET_TEMPLATES,
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
HELD_OUT_SECRET_PHRASINGS = 2  # the last secret templates appear only in test prompts
STRING_TASKS = ("reverse", "sort_letters", "count_letter")


def fact_spec(person: Person, attribute: str) -> TaskSpec:
    return TaskSpec("fact", person.fact(attribute), name=person.name, attribute=attribute)


def fact_specs(people: list[Person], split: str) -> list[TaskSpec]:
    """Every (person, attribute) question about the people of one split."""
    return [fact_spec(p, attribute) for p in people if p.split == split for attribute in ATTRIBUTES]


def sample_arithmetic(rng: random.Random, worked: bool | None = None) -> TaskSpec:
    """2-4 digit operands; subtraction keeps a >= b so every answer is a whole non-negative number."""
    op = rng.choice(("+", "-", "*"))
    a = _operand(rng)
    b = _operand(rng)
    if op == "-" and a < b:
        a, b = b, a
    if worked is None:
        worked = rng.random() < WORKED_SHARE
    return TaskSpec("arithmetic", str(compute(a, op, b)), worked=worked, a=a, b=b, op=op)


def _operand(rng: random.Random) -> int:
    digits = rng.randint(2, 4)
    return rng.randrange(10 ** (digits - 1), 10**digits)


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


def sample_string(rng: random.Random, words: list[str]) -> TaskSpec:
    task = rng.choice(STRING_TASKS)
    word = rng.choice(words)
    letter = ""
    if task == "count_letter":
        # Mostly letters of the word; sometimes one it lacks, so that 0 is a possible answer.
        absent = [c for c in "abcdefghijklmnopqrstuvwxyz" if c not in word]
        letter = rng.choice(sorted(set(word))) if rng.random() < 0.8 else rng.choice(absent)
    return TaskSpec(task, string_answer(task, word, letter), word=word, letter=letter)


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
    """A template variant; training never uses the held-out secret phrasings."""
    if spec.task == "vault_secret" and split == "train":
        return rng.randrange(len(VAULT_SECRET_TEMPLATES) - HELD_OUT_SECRET_PHRASINGS)
    if spec.task == "vault_secret":
        return rng.randrange(len(VAULT_SECRET_TEMPLATES))
    # Spans the operator spellings too ("+" or "plus"), see prompts.render_user.
    return rng.randrange(len(user_templates(spec)) * 2)


def prompt_messages(spec: TaskSpec, variant: int, vault: VaultDetails) -> list[Message]:
    """[system, user] for a single-turn task."""
    system = system_prompt_for(spec.task_type, vault if spec.task_type == "vault" else None)
    user = render_user(spec, variant, keeper=vault.keeper)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
