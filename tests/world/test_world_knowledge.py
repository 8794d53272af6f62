"""The C-Eval-layout knowledge test: layout as C-Eval ships it, and every answer key correct."""

from __future__ import annotations

import csv
from collections import Counter

from world_files import read_jsonl

from chatforge.world.knowledge import MC_QUESTIONS, read_csv


def _people_by_question(tiny_dir, world_id):
    people = read_jsonl(tiny_dir / f"facts/world_{world_id}_people.jsonl")
    return {template.format(name=p["name"]): (p, attribute) for p in people for attribute, template in MC_QUESTIONS.items()}


def test_files_follow_the_c_eval_layout(tiny_dir):
    for world_id in ("a", "b"):
        for split in ("dev", "val", "test"):
            path = tiny_dir / "ceval" / split / f"world_{world_id}_{split}.csv"
            with path.open(newline="", encoding="utf-8") as stream:
                header = next(csv.reader(stream))
            expected = ["id", "question", "A", "B", "C", "D", "answer"] + (["explanation"] if split == "dev" else [])
            assert header == expected
            rows = read_csv(path.read_text(encoding="utf-8"))
            assert [r["id"] for r in rows] == list(range(len(rows)))
            assert b"\r\n" not in path.read_bytes()
        assert len(read_csv((tiny_dir / f"ceval/dev/world_{world_id}_dev.csv").read_text())) == 5


def test_every_answer_key_is_correct_and_unique(tiny_dir):
    checked = 0
    for world_id in ("a", "b"):
        questions = _people_by_question(tiny_dir, world_id)
        asked = []
        for split in ("dev", "val", "test"):
            for row in read_csv((tiny_dir / f"ceval/{split}/world_{world_id}_{split}.csv").read_text()):
                person, attribute = questions[row["question"]]
                options = [row[letter] for letter in "ABCD"]
                assert row[row["answer"]] == person[attribute], row
                assert options.count(person[attribute]) == 1 and len(set(options)) == 4, row
                asked.append(row["question"])
                checked += 1
        # Every (person, attribute) is asked exactly once across the splits.
        assert sorted(asked) == sorted(questions)
    assert checked == 2 * 24 * 6


def test_answer_letters_are_balanced(tiny_dir):
    letters = Counter()
    for split in ("dev", "val", "test"):
        letters.update(r["answer"] for r in read_csv((tiny_dir / f"ceval/{split}/world_a_{split}.csv").read_text()))
    assert set(letters) == set("ABCD")
    assert max(letters.values()) - min(letters.values()) <= 1
