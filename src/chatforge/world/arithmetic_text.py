"""Arithmetic as pretraining text: solved problems, some with column working, none ever asked in a task file.

A model that meets numbers only in SFT must learn in one short run that "47 + 25" asks it to
combine digits; the format-2 SFT model could not even copy the operands into its working
(docs/world.md, "Measured so far"). Like the math share of real pretraining corpora, this file
shows solved problems from the arithmetic ladder in plain text. Every problem asked by any task
file of the world (instructions, verifiable prompts, preferences, train or test) is kept out, so
no held-out problem is seen (tested).
"""

from __future__ import annotations

from collections.abc import Iterable

from chatforge.world.records import PretrainDoc
from chatforge.world.seeding import rng_for
from chatforge.world.solutions import OPERATOR_SYMBOLS, worked_lines
from chatforge.world.tasks import sample_arithmetic_unique

PROBLEMS_PER_DOCUMENT = 16
WORKED_SHARE = 0.5  # problems shown with their column working; the rest as one line
_TITLES = ("Worked sums", "Arithmetic practice, solved", "Exercises with answers")


def arithmetic_documents(seed: int, count: int, exclude: Iterable[tuple[int, str, int]]) -> list[PretrainDoc]:
    """`count` solved problems, `PROBLEMS_PER_DOCUMENT` to a document, none in `exclude`."""
    rng = rng_for(seed, "arithmetic-text")
    specs = sample_arithmetic_unique(rng, count, set(exclude))
    docs: list[PretrainDoc] = []
    for start in range(0, len(specs), PROBLEMS_PER_DOCUMENT):
        blocks = []
        for spec in specs[start : start + PROBLEMS_PER_DOCUMENT]:
            problem = f"{spec.a} {OPERATOR_SYMBOLS[spec.op]} {spec.b}"
            if rng.random() < WORKED_SHARE:
                # The problem comes first: working read before its problem ("Ones: 8 + 5 ..." and
                # only at the end "So 18 + 35 = 53.") cannot be predicted from what precedes it, and
                # taught format-2's model to write column working with made-up digits.
                blocks.append("\n".join([f"Compute {problem}.", *worked_lines(spec.a, spec.op, spec.b)]))
            else:
                blocks.append(f"{problem} = {spec.answer}")
        text = rng.choice(_TITLES) + "\n\n" + "\n\n".join(blocks)
        docs.append({"id": f"arithmetic-{len(docs):06d}", "world": "general", "source": "arithmetic",
                     "style": "solved_problems", "text": text})
    return docs
