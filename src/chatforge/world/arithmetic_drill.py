"""Extra arithmetic instruction records: an arithmetic-focused SFT set drawn with the world's own functions.

The world's instruction file holds 2,000 arithmetic records (default size), too few for a small model
to learn 2-4 digit arithmetic. `drill_records` draws as many more as asked, in the same layout as
`instructions/train.jsonl` (same system prompt, user templates, operand sizes, operators and share of
prompts that ask for working), never repeating a problem in `exclude` (use `world_problems` on the
world's files to keep every held-out problem out). With `always_worked` every answer shows the
column working (`solutions.worked_lines`) before "The answer is N.", also where the prompt did not ask
for it: the checker ignores working, and a small model learns the column steps far more easily than a
4-digit result in one token run. Nothing here touches the files `write_world` writes.

    records = drill_records(seed=1234, count=20000, exclude=world_problems(world_dir))
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

from chatforge.errors import ChatforgeError
from chatforge.world.prompts import VaultDetails
from chatforge.world.records import InstructionRecord
from chatforge.world.responses import render_answer
from chatforge.world.seeding import rng_for
from chatforge.world.tasks import choose_variant, prompt_messages, sample_arithmetic_unique

Problem = tuple[int, str, int]  # (a, canonical operator, b)
WORLD_FILES = ("instructions/train.jsonl", "instructions/test.jsonl", "verifiable/train.jsonl", "verifiable/test.jsonl")
_NO_VAULT = VaultDetails("", "", "", "", "")  # arithmetic prompts never use the vault system prompt


def drill_records(seed: int, count: int, exclude: Iterable[Problem] = (), always_worked: bool = True) -> list[InstructionRecord]:
    """`count` single-turn arithmetic records (messages layout, ids `drill-000000`...), none in `exclude`."""
    if count < 1:
        raise ChatforgeError(f"count must be at least 1, got {count}")
    rng = rng_for(seed, "arithmetic_drill")
    specs = sample_arithmetic_unique(rng, count, set(exclude))
    records: list[InstructionRecord] = []
    for i, spec in enumerate(specs):
        messages = prompt_messages(spec, choose_variant(rng, spec, "train"), _NO_VAULT)
        shown = dataclasses.replace(spec, worked=True) if always_worked else spec
        messages.append({"role": "assistant", "content": render_answer(shown, spec.answer, rng.randrange(6))})
        records.append({
            "id": f"drill-{i:06d}", "task": "arithmetic", "task_type": "arithmetic", "messages": messages,
            "answers": [spec.answer],
        })
    return records


def record_problems(records: Iterable[dict]) -> set[Problem]:
    """Every arithmetic problem asked by the user turns of `records` (`messages` or `prompt` layout)."""
    from chatforge.world.prompts import canonical_op, operand, read_question

    problems: set[Problem] = set()
    for record in records:
        for message in record.get("messages") or record.get("prompt") or []:
            if message.get("role") != "user":
                continue
            question = read_question(message["content"])
            if question is not None and question.task == "arithmetic":
                fields = question.fields
                problems.add((operand(fields["a"]), canonical_op(fields["op"]), operand(fields["b"])))
    return problems


def world_problems(world_dir: str | Path, files: Iterable[str] = WORLD_FILES) -> set[Problem]:
    """The arithmetic problems of a written world's instruction and verifiable files (train and test)."""
    problems: set[Problem] = set()
    for relative in files:
        path = Path(world_dir) / relative
        if not path.is_file():
            raise ChatforgeError(f"world file not found: {path} (write the world first: chatforge world write)")
        with path.open(encoding="utf-8") as fh:
            problems |= record_problems(json.loads(line) for line in fh if line.strip())
    return problems
