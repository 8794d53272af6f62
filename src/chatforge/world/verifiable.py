"""Verifiable prompts (arithmetic and string tasks) and their binary checker, for ReST-EM, GRPO, pass@k.

`check(record, response)` is True exactly when the response's final answer (see answers.py: the
text after the last "The answer is", or a labelled/bare final answer) equals the record's answer.
Working before the final sentence is allowed and ignored. Spelled string answers compare exactly
(up to case and surrounding quotes): "s g n i v a s" is right and the unspelled "sgnivas" is wrong,
because the task asks for the letters spelled and accepting the word would reward the BPE chunks
a tiny model cannot build letter by letter (docs/world.md, "String tasks, spelled").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatforge.errors import ChatforgeError
from chatforge.world.answers import answers_match, extract_final_answer
from chatforge.world.prompts import NUMERIC_TASKS, VaultDetails
from chatforge.world.records import VerifiablePrompt
from chatforge.world.responses import reference_response
from chatforge.world.seeding import rng_for
from chatforge.world.tasks import choose_variant, prompt_messages, sample_arithmetic_unique, sample_string

VERIFIABLE_TASKS = frozenset({"arithmetic", "reverse", "sort_letters", "count_letter"})


def check(record: Mapping[str, Any], response: str) -> bool:
    """Whether `response` answers the verifiable prompt `record` correctly (needs `task`, `answer`)."""
    try:
        task, answer = record["task"], str(record["answer"])
    except KeyError as exc:
        raise ChatforgeError(f"verifiable record {record.get('id', '?')}: missing field {exc}") from None
    if task not in VERIFIABLE_TASKS:
        raise ChatforgeError(f"verifiable record {record.get('id', '?')}: task {task!r} has no checker")
    return answers_match(answer, extract_final_answer(response), numeric=task in NUMERIC_TASKS)


def verifiable_records(seed: int, words: dict[str, list[str]], vault: VaultDetails,
                       counts: tuple[int, int], string_form: str = "spelled") -> dict[str, list[VerifiablePrompt]]:
    """Half arithmetic, half string tasks; test problems never appear in train."""
    seen: set[tuple[int, str, int]] = set()
    out: dict[str, list[VerifiablePrompt]] = {}
    for index, split in enumerate(("train", "test")):
        rng = rng_for(seed, "verifiable", split)
        count = counts[index]
        specs = sample_arithmetic_unique(rng, count // 2, seen)
        specs += [sample_string(rng, words[split], string_form) for _ in range(count - count // 2)]
        rng.shuffle(specs)
        out[split] = [
            {
                "id": f"verifiable-{split}-{i:06d}", "task": spec.task,
                "prompt": prompt_messages(spec, choose_variant(rng, spec, split), vault),
                "answer": spec.answer, "reference": reference_response(spec),
            }
            for i, spec in enumerate(specs)
        ]
    return out
