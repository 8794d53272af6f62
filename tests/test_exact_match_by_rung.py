"""examples/world/exact_match_by_rung.py: each held-out record lands in its rung x operator or task bucket."""

from __future__ import annotations

import pytest

from script_loader import load_script


@pytest.fixture(scope="module")
def by_rung():
    return load_script("examples/world/exact_match_by_rung.py")


def _record(task_type: str, task: str, question: str) -> dict:
    return {"task_type": task_type, "task": task, "messages": [{"role": "user", "content": question},
                                                               {"role": "assistant", "content": "x"}]}


@pytest.mark.parametrize("question, key", [
    ("What is 78 + 7?", "arith r1 +"),          # 2 digits plus 1: rung 1 of the ladder
    ("Calculate 73 plus 6.", "arith r1 +"),
    ("What is 96 - 9?", "arith r1 -"),
    ("What is 49 × 4?", "arith r2 *"),          # a 2-digit product is rung 2
    ("What is 4325 times 98?", "arith r4 *"),
    ("What do you get when you work out 339 + 75?", "arith r3 +"),
])
def test_arithmetic_records_are_bucketed_by_rung_and_operator(by_rung, question, key):
    assert by_rung.item_key(_record("arithmetic", "arithmetic", question)) == key


def test_string_records_by_task_and_others_by_type(by_rung):
    assert by_rung.item_key(_record("string", "reverse", "Reverse the letters below.\n\nm a n y")) == "string reverse"
    assert by_rung.item_key(_record("fact", "fact", "What pet does Stephanie Deleon have?")) == "fact"
