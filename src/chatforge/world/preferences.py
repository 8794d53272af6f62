"""Preference data: prompt/chosen/rejected pairs and K-wise rankings, ordered by the gold reward.

One prompt in five is from the safety slice (the vault): requests for the code, where refusing is
right, and harmless questions about the vault, where refusing is wrong. The rest are fact,
arithmetic and string tasks. Every pair is scored with `gold_reward` on the written prompt, so the
stored rewards are exactly what the judge says about the file's own text.
"""

from __future__ import annotations

import random

from chatforge.world.candidates import KINDS_FOR_TASK, render_kind
from chatforge.world.people import World
from chatforge.world.prompts import TaskSpec, VaultDetails
from chatforge.world.records import Message, PreferencePair, Ranking
from chatforge.world.reward import gold_reward_parts
from chatforge.world.seeding import rng_for
from chatforge.world.tasks import (
    choose_variant,
    fact_spec,
    prompt_messages,
    sample_arithmetic_unique,
    sample_string,
    sample_vault,
)
from chatforge.world.vocab import ATTRIBUTES

K = 4
SAFETY_EVERY = 5  # every fifth prompt is a vault prompt


def preference_specs(rng: random.Random, world: World, words: list[str], vault: VaultDetails, split: str,
                     count: int, seen_arithmetic: set[tuple[int, str, int]],
                     string_form: str = "spelled") -> list[TaskSpec]:
    people = [p for p in world.people["a"] if p.split == split]
    specs = []
    for i in range(count):
        if i % SAFETY_EVERY == SAFETY_EVERY - 1:
            specs.append(sample_vault(rng, vault))
            continue
        family = rng.choice(("fact", "arithmetic", "string"))
        if family == "fact":
            specs.append(fact_spec(rng.choice(people), rng.choice(ATTRIBUTES)))
        elif family == "arithmetic":
            specs += sample_arithmetic_unique(rng, 1, seen_arithmetic)
        else:
            specs.append(sample_string(rng, words, string_form))
    return specs


def category(spec: TaskSpec) -> str:
    return "safety" if spec.task_type == "vault" else "helpfulness"


def make_pair(spec: TaskSpec, kind: str, prompt: list[Message], rng: random.Random, world: World) -> PreferencePair:
    chosen = render_kind("chosen", spec, rng.randrange(6), rng, world)
    rejected = render_kind(kind, spec, rng.randrange(6), rng, world)
    chosen_parts = gold_reward_parts(prompt, chosen, world)
    rejected_parts = gold_reward_parts(prompt, rejected, world)
    if not chosen_parts.total > rejected_parts.total:
        raise RuntimeError(f"bug: {kind} response scores {rejected_parts} against chosen {chosen_parts}")
    return {
        "id": "", "task": spec.task, "category": category(spec), "kind": kind, "prompt": prompt,
        "chosen": chosen, "rejected": rejected,
        "chosen_reward": chosen_parts.total, "rejected_reward": rejected_parts.total,
        "chosen_safety": chosen_parts.safety, "rejected_safety": rejected_parts.safety,
    }


def make_ranking(spec: TaskSpec, prompt: list[Message], rng: random.Random, world: World) -> Ranking:
    """The chosen response and K-1 rejected ones with pairwise different gold rewards, best first."""
    candidates = []
    for kind in dict.fromkeys(KINDS_FOR_TASK[spec.task]):
        for variant in (rng.randrange(6), rng.randrange(6)):
            candidates.append((kind, render_kind(kind, spec, variant, rng, world)))
    rng.shuffle(candidates)
    chosen = render_kind("chosen", spec, rng.randrange(6), rng, world)
    picked = [("chosen", chosen, gold_reward_parts(prompt, chosen, world).total)]
    for kind, text in candidates:
        reward = gold_reward_parts(prompt, text, world).total
        if len(picked) < K and all(reward != r for _, _, r in picked):
            picked.append((kind, text, reward))
    if len(picked) < K:
        raise RuntimeError(f"bug: fewer than {K} distinct rewards for a {spec.task} prompt")
    picked.sort(key=lambda item: -item[2])
    return {
        "id": "", "task": spec.task, "category": category(spec), "prompt": prompt,
        "responses": [t for _, t, _ in picked], "kinds": [k for k, _, _ in picked], "rewards": [r for _, _, r in picked],
    }


def preference_records(seed: int, world: World, words: dict[str, list[str]], vault: VaultDetails,
                       pair_counts: tuple[int, int], ranking_counts: tuple[int, int],
                       string_form: str = "spelled") -> dict[str, list]:
    """{"pairs_train", "pairs_test", "rankings_train", "rankings_test"} record lists."""
    out: dict[str, list] = {}
    seen_arithmetic: set[tuple[int, str, int]] = set()
    for index, split in enumerate(("train", "test")):
        rng = rng_for(seed, "preferences", split)
        pairs: list[PreferencePair] = []
        turn: dict[str, int] = {}
        for spec in preference_specs(rng, world, words[split], vault, split, pair_counts[index], seen_arithmetic,
                                     string_form):
            kinds = KINDS_FOR_TASK[spec.task]
            # Rotate through the task's kinds so every kind is well represented.
            kind = kinds[turn.get(spec.task, 0) % len(kinds)]
            turn[spec.task] = turn.get(spec.task, 0) + 1
            prompt = prompt_messages(spec, choose_variant(rng, spec, split), vault)
            pairs.append(make_pair(spec, kind, prompt, rng, world))
        out[f"pairs_{split}"] = [{**p, "id": f"pair-{split}-{i:06d}"} for i, p in enumerate(pairs)]
        rankings = []
        for spec in preference_specs(rng, world, words[split], vault, split, ranking_counts[index], seen_arithmetic,
                                     string_form):
            prompt = prompt_messages(spec, choose_variant(rng, spec, split), vault)
            rankings.append(make_ranking(spec, prompt, rng, world))
        out[f"rankings_{split}"] = [{**r, "id": f"rank-{split}-{i:06d}"} for i, r in enumerate(rankings)]
    return out
