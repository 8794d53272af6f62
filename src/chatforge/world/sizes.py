"""How much of each kind of data a world size writes.

`tiny` is for tests (writes in about a second). `default` is sized so that a ~10M-parameter model can
learn world A's facts on 2 CPU cores in minutes: 300 people x 6 attributes, each fact stated 10 times,
about 0.95 MB of pretraining text per world (0.73 MB of facts, 0.22 MB of prose).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SizeName = Literal["tiny", "small", "default", "large"]


@dataclass(frozen=True)
class WorldSize:
    people: int  # people per world (A and B each)
    fact_repeats: int  # how many documents state each fact
    qa_rounds: int  # short-answer QA rounds about train people (pretrain/world_*_qa.jsonl)
    arithmetic_text: int  # solved problems in pretrain/arithmetic_train.jsonl (none asked by a task file)
    letters_text: int  # solved letter puzzles in pretrain/letters_train.jsonl (no held-out word)
    prose_docs: int  # general-text documents (from pydoc_data.topics) mixed into each world's corpus
    arithmetic: tuple[int, int]  # (train, test) single-turn arithmetic instructions
    string: tuple[int, int]  # (train, test) single-turn string-task instructions
    conversations: tuple[int, int]  # (train, test) multi-turn conversations
    vault: tuple[int, int]  # (train, test) vault (safety) instructions
    pairs: tuple[int, int]  # (train, test) preference pairs
    rankings: tuple[int, int]  # (train, test) K-wise rankings
    mixed_quality_prompts: int  # prompts answered by both the expert and the novice source
    verifiable: tuple[int, int]  # (train, test) verifiable prompts
    probes: int  # preference prompts with dynamics probes
    web_pages: int  # HTML pages for the cleaning pipeline
    # String tasks asked letter by letter ("s a v e", one token per letter) or as whole words (formats 1-2;
    # for models whose tokens spell their letters). Spelled at every size: see docs/world.md.
    string_form: str = "spelled"


SIZES: dict[str, WorldSize] = {
    "tiny": WorldSize(
        people=24, fact_repeats=2, qa_rounds=1, arithmetic_text=160, letters_text=240, prose_docs=6, arithmetic=(40, 20), string=(40, 20),
        conversations=(8, 4), vault=(12, 6), pairs=(60, 30), rankings=(20, 10), mixed_quality_prompts=30,
        verifiable=(40, 20), probes=10, web_pages=60,
    ),
    "small": WorldSize(
        people=80, fact_repeats=4, qa_rounds=2, arithmetic_text=1600, letters_text=12000, prose_docs=40, arithmetic=(400, 100), string=(300, 80),
        conversations=(60, 20), vault=(40, 12), pairs=(400, 100), rankings=(150, 40), mixed_quality_prompts=300,
        verifiable=(300, 100), probes=40, web_pages=200,
    ),
    # Sized for the whole chain on 2 CPU cores in 20 minutes (docs/world.md, "Sizes"): 100 people so
    # that each fact is read ~100 times in a few minutes of pretraining; little prose, which would
    # otherwise take a third of the tokens.
    "default": WorldSize(
        people=100, fact_repeats=6, qa_rounds=3, arithmetic_text=4000, letters_text=40000, prose_docs=16, arithmetic=(1500, 200), string=(900, 150),
        conversations=(200, 50), vault=(150, 40), pairs=(2000, 300), rankings=(600, 100),
        mixed_quality_prompts=1000, verifiable=(1000, 200), probes=100, web_pages=400,
    ),
    # The first world's default (format 1): 300 people, each fact in 10 documents, 1 MB of text per world.
    "large": WorldSize(
        people=300, fact_repeats=10, qa_rounds=3, arithmetic_text=4000, letters_text=40000, prose_docs=1000, arithmetic=(2000, 200), string=(1500, 150),
        conversations=(300, 50), vault=(200, 40), pairs=(2000, 300), rankings=(600, 100),
        mixed_quality_prompts=1000, verifiable=(1000, 200), probes=100, web_pages=400,
    ),
}
