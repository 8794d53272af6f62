"""Instruction data (SFT): single-turn tasks and multi-turn conversations, in three formats.

The `messages` records are the source of truth; the Alpaca and ShareGPT files are the same
conversations converted, so format adapters can be tested against each other.
"""

from __future__ import annotations

import random

from chatforge.world.people import World
from chatforge.world.prompts import SYSTEM_PROMPTS, TaskSpec, VaultDetails, render_user
from chatforge.world.records import AlpacaRecord, InstructionRecord, Message, ShareGptRecord
from chatforge.world.responses import render_answer
from chatforge.world.seeding import rng_for
from chatforge.world.sizes import WorldSize
from chatforge.world.tasks import (
    choose_variant,
    fact_specs,
    prompt_messages,
    sample_arithmetic_unique,
    sample_string,
    sample_vault,
)

TURNS_PER_CONVERSATION = (2, 3)


def answer_text(spec: TaskSpec, rng: random.Random) -> str:
    """A correct answer in one of the convention-following styles (varied, for SFT diversity)."""
    return render_answer(spec, spec.answer, rng.randrange(6))


def single_turn(spec: TaskSpec, rng: random.Random, split: str, vault: VaultDetails) -> InstructionRecord:
    messages = prompt_messages(spec, choose_variant(rng, spec, split), vault)
    messages.append({"role": "assistant", "content": answer_text(spec, rng)})
    return {"id": "", "task": spec.task, "task_type": spec.task_type, "messages": messages, "answers": [spec.answer]}


def conversation(specs: list[TaskSpec], rng: random.Random, split: str) -> InstructionRecord:
    """Several tasks asked one after another under the general system prompt."""
    messages: list[Message] = [{"role": "system", "content": SYSTEM_PROMPTS["conversation"]}]
    for spec in specs:
        messages.append({"role": "user", "content": render_user(spec, choose_variant(rng, spec, split))})
        messages.append({"role": "assistant", "content": answer_text(spec, rng)})
    return {
        "id": "", "task": "conversation", "task_type": "conversation", "messages": messages,
        "answers": [s.answer for s in specs],
    }


def split_specs(seed: int, world: World, size: WorldSize, words: dict[str, list[str]], vault: VaultDetails,
                label: str) -> dict[str, list[TaskSpec]]:
    """Single-turn task specs for train and test (see tasks.py for how the splits stay apart)."""
    rng = rng_for(seed, label, "specs")
    seen_arithmetic: set[tuple[int, str, int]] = set()
    specs: dict[str, list[TaskSpec]] = {}
    for index, split in enumerate(("train", "test")):
        chosen = fact_specs(world.people["a"], split)
        chosen += sample_arithmetic_unique(rng, size.arithmetic[index], seen_arithmetic)
        chosen += [sample_string(rng, words[split], size.string_form) for _ in range(size.string[index])]
        chosen += [sample_vault(rng, vault) for _ in range(size.vault[index])]
        specs[split] = chosen
    return specs


def instruction_records(seed: int, world: World, size: WorldSize, words: dict[str, list[str]],
                        vault: VaultDetails) -> dict[str, list[InstructionRecord]]:
    specs = split_specs(seed, world, size, words, vault, "instructions")
    rng = rng_for(seed, "instructions", "render")
    out: dict[str, list[InstructionRecord]] = {}
    for index, split in enumerate(("train", "test")):
        records = [single_turn(spec, rng, split, vault) for spec in specs[split]]
        # Conversations reuse this split's questions (never vault ones: those need their own system prompt).
        pool = [s for s in specs[split] if s.task_type != "vault"]
        for _ in range(size.conversations[index]):
            turns = rng.randint(*TURNS_PER_CONVERSATION)
            records.append(conversation(rng.sample(pool, turns), rng, split))
        rng.shuffle(records)
        out[split] = [{**r, "id": f"{split}-{i:06d}"} for i, r in enumerate(records)]
    return out


def to_alpaca(record: InstructionRecord) -> AlpacaRecord:
    """The last turn as instruction/input/output; earlier turns as `history`.

    A user message with a blank line is split there: the text before is the instruction and the
    text after is the input, so `instruction + "\\n\\n" + input` gives the message back.
    """
    system = "".join(m["content"] for m in record["messages"] if m["role"] == "system")
    turns = _turns(record["messages"])
    user, assistant = turns[-1]
    instruction, _, given = user.partition("\n\n")
    return {
        "id": record["id"], "task": record["task"], "system": system, "instruction": instruction,
        "input": given, "output": assistant, "history": [list(t) for t in turns[:-1]],
    }


def to_sharegpt(record: InstructionRecord) -> ShareGptRecord:
    system = "".join(m["content"] for m in record["messages"] if m["role"] == "system")
    speaker = {"user": "human", "assistant": "gpt"}
    conversations = [{"from": speaker[m["role"]], "value": m["content"]} for m in record["messages"] if m["role"] != "system"]
    return {"id": record["id"], "task": record["task"], "system": system, "conversations": conversations}  # type: ignore[typeddict-item]


def _turns(messages: list[Message]) -> list[tuple[str, str]]:
    dialogue = [m for m in messages if m["role"] != "system"]
    return [(dialogue[i]["content"], dialogue[i + 1]["content"]) for i in range(0, len(dialogue), 2)]
