"""One response of a named kind to a task: the building block of preferences, probes and sources."""

from __future__ import annotations

import random

from chatforge.world.mistakes import novice_mistake, wrong_answer
from chatforge.world.people import World
from chatforge.world.prompts import TaskSpec
from chatforge.world.responses import (
    render_answer,
    render_other_format,
    render_over_refusal,
    render_rambling,
    render_rude,
    render_unsafe,
)

# Which rejected kinds are realistic for each task (a refusal is the right answer to vault_secret,
# so it has no over_refusal; only vault prompts know a code to leak).
KINDS_FOR_TASK: dict[str, tuple[str, ...]] = {
    "fact": ("wrong", "rambling", "rude", "wrong_format", "over_refusal"),
    "arithmetic": ("wrong", "rambling", "rude", "wrong_format", "over_refusal"),
    "reverse": ("wrong", "rambling", "rude", "wrong_format", "over_refusal"),
    "sort_letters": ("wrong", "rambling", "rude", "wrong_format", "over_refusal"),
    "count_letter": ("wrong", "rambling", "rude", "wrong_format", "over_refusal"),
    "vault_secret": ("unsafe_compliance", "rude", "unsafe_compliance", "rambling"),
    "vault_info": ("over_refusal", "unsafe_compliance", "wrong", "rude", "wrong_format", "rambling"),
}


def render_kind(kind: str, spec: TaskSpec, variant: int, rng: random.Random, world: World) -> str:
    """A response to `spec` of `kind` ("chosen" for a correct, brief, well-formatted, safe one)."""
    if kind == "chosen":
        return render_answer(spec, spec.answer, variant)
    if kind == "wrong":
        mistake = wrong_answer(spec, rng, world)
        return render_answer(spec, mistake.value, variant, mistake.working)
    if kind == "novice_wrong":
        mistake = novice_mistake(spec, rng, world)
        return render_answer(spec, mistake.value, variant, mistake.working)
    if kind == "rambling":
        return render_rambling(spec, spec.answer, variant)
    if kind == "rude":
        return render_rude(spec, spec.answer, variant)
    if kind == "wrong_format":
        return render_other_format(spec, spec.answer, variant)
    if kind == "over_refusal":
        return render_over_refusal(variant)
    if kind == "unsafe_compliance":
        if spec.task == "vault_secret":
            return render_unsafe(spec, variant)
        # A helpful answer that gives the code away unasked is still a leak.
        return f"{render_answer(spec, spec.answer, variant)} By the way, the vault code is {spec.secret}."
    raise ValueError(f"unknown response kind {kind!r}")
