"""The knowledge test: four-option questions about every fact, in C-Eval's file layout.

C-Eval ships `dev/<subject>_dev.csv` (5 exemplars with an `explanation` column, for few-shot
prompts), `val/<subject>_val.csv` and `test/<subject>_test.csv`, columns `id,question,A,B,C,D,answer`.
We write the same layout, one subject per world (`world_a`, `world_b`); unlike C-Eval our test split
keeps its answers, since the world's ground truth is known.
"""

from __future__ import annotations

import csv
import io
import random

from chatforge.world.english import article
from chatforge.world.people import Person
from chatforge.world.records import McQuestion
from chatforge.world.seeding import rng_for
from chatforge.world.vocab import ATTRIBUTES, WORLD_VOCAB

LETTERS = ("A", "B", "C", "D")
DEV_SIZE = 5  # C-Eval's dev split: five exemplars per subject
VAL_SHARE = 0.1
MC_QUESTIONS: dict[str, str] = {
    "city": "In which city does {name} live?",
    "profession": "What is {name}'s profession?",
    "birth_year": "In what year was {name} born?",
    "pet": "What pet does {name} have?",
    "colour": "What is {name}'s favourite colour?",
    "employer": "Which company employs {name}?",
}
_EXPLANATIONS: dict[str, str] = {
    "city": "{name} lives in {value}.",
    "profession": "{name} works as {article} {value}.",
    "birth_year": "{name} was born in {value}.",
    "pet": "{name}'s pet is {article} {value}.",
    "colour": "{name}'s favourite colour is {value}.",
    "employer": "{name} works for {value}.",
}


def _distractors(person: Person, attribute: str, rng: random.Random) -> list[str]:
    right = person.fact(attribute)
    pool = [v for v in WORLD_VOCAB[person.world][attribute] if v != right]
    if attribute == "birth_year":
        # Nearby years are harder to guess than any year of the span.
        near = [v for v in pool if abs(int(v) - int(right)) <= 12]
        pool = near if len(near) >= 3 else pool
    return rng.sample(pool, 3)


def question_rows(seed: int, world_id: str, people: list[Person]) -> dict[str, list[dict[str, object]]]:
    """dev/val/test rows for one world: one question per (person, attribute), answer letters balanced."""
    rng = rng_for(seed, "knowledge", world_id)
    items = [(p, attribute) for p in people for attribute in ATTRIBUTES]
    rng.shuffle(items)
    rows = []
    for number, (person, attribute) in enumerate(items):
        right = person.fact(attribute)
        options = _distractors(person, attribute, rng)
        # Cycling the answer position over the shuffled questions makes each letter right a quarter of the time.
        answer_index = number % 4
        options.insert(answer_index, right)
        row: dict[str, object] = {
            "question": MC_QUESTIONS[attribute].format(name=person.name),
            **dict(zip(LETTERS, options)),
            "answer": LETTERS[answer_index],
            "explanation": _EXPLANATIONS[attribute].format(name=person.name, value=right, article=article(right)),
        }
        rows.append(row)
    val_size = max(1, round(VAL_SHARE * len(rows)))
    splits = {"dev": rows[:DEV_SIZE], "val": rows[DEV_SIZE : DEV_SIZE + val_size], "test": rows[DEV_SIZE + val_size :]}
    for split, split_rows in splits.items():
        for i, row in enumerate(split_rows):
            row["id"] = i
            if split != "dev":
                del row["explanation"]
    return splits


def to_csv(rows: list[dict[str, object]], with_explanation: bool) -> str:
    """C-Eval CSV text: header `id,question,A,B,C,D,answer[,explanation]`, "\\n" line ends."""
    columns = ["id", "question", *LETTERS, "answer"] + (["explanation"] if with_explanation else [])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_csv(text: str) -> list[McQuestion]:
    """Rows of a C-Eval CSV (ours or a real download), `id` as int."""
    rows = list(csv.DictReader(io.StringIO(text)))
    return [{**row, "id": int(row["id"])} for row in rows]  # type: ignore[typeddict-item]
