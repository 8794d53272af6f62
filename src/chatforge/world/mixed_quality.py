"""Mixed-quality sources for C-RLFT: each prompt answered by an expert and by a novice.

The expert is always right. The novice is wrong on exactly `round(novice_error_rate * prompts)`
prompts (chosen at random) and right on the rest; its errors follow one bug per task
(`mistakes.novice_mistake`: no carries, the commonest value, the word unchanged, the word's length), so plain SFT on
both sources learns the bug and a source-conditioned learner can leave it out. Records carry the source label and whether the
answer is correct, so a learner can weight sources without seeing the truth.
"""

from __future__ import annotations

from chatforge.world.answers import answers_match, extract_final_answer
from chatforge.world.candidates import render_kind
from chatforge.world.people import World
from chatforge.world.prompts import NUMERIC_TASKS, TaskSpec, VaultDetails
from chatforge.world.records import MixedQualityRecord
from chatforge.world.seeding import rng_for
from chatforge.world.tasks import choose_variant, fact_spec, prompt_messages, sample_arithmetic, sample_string
from chatforge.world.vocab import ATTRIBUTES


def mixed_quality_records(seed: int, world: World, words: list[str], vault: VaultDetails, prompts: int,
                          novice_error_rate: float, string_form: str = "spelled") -> list[MixedQualityRecord]:
    rng = rng_for(seed, "mixed-quality")
    people = [p for p in world.people["a"] if p.split == "train"]
    specs: list[TaskSpec] = []
    for _ in range(prompts):
        family = rng.choice(("fact", "arithmetic", "string"))
        if family == "fact":
            specs.append(fact_spec(rng.choice(people), rng.choice(ATTRIBUTES)))
        elif family == "arithmetic":
            specs.append(sample_arithmetic(rng))
        else:
            specs.append(sample_string(rng, words, string_form))
    wrong = set(rng.sample(range(prompts), round(novice_error_rate * prompts)))
    records: list[MixedQualityRecord] = []
    for index, spec in enumerate(specs):
        prompt = prompt_messages(spec, choose_variant(rng, spec, "train"), vault)
        prompt_id = f"mq-{index:06d}"
        answers = {
            "expert": render_kind("chosen", spec, rng.randrange(6), rng, world),
            "novice": render_kind("novice_wrong" if index in wrong else "chosen", spec, rng.randrange(6), rng, world),
        }
        for source, response in answers.items():
            correct = answers_match(spec.answer, extract_final_answer(response), spec.task in NUMERIC_TASKS)
            records.append({
                "id": f"{prompt_id}-{source}", "prompt_id": prompt_id, "task": spec.task, "source": source,
                "messages": [*prompt, {"role": "assistant", "content": response}], "correct": correct,
            })
    return records
