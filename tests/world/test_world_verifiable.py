"""Verifiable prompts: the checker accepts every reference (also embedded in prose or working) and
rejects a wrong answer; the final-answer convention is read as documented."""

from __future__ import annotations

import random

import pytest
from world_files import read_jsonl

from chatforge.errors import ChatforgeError
from chatforge.world import build_world, check, check_answer, extract_final_answer, spec_from_prompt
from chatforge.world.mistakes import wrong_answer
from chatforge.world.responses import render_answer


def test_checker_accepts_references_and_rejects_wrong_answers(tiny_dir):
    world = build_world(seed=1234, size="tiny")
    rng = random.Random(0)
    tasks = set()
    for split in ("train", "test"):
        for record in read_jsonl(tiny_dir / f"verifiable/{split}.jsonl"):
            spec = spec_from_prompt(record["prompt"])
            assert spec.answer == record["answer"]
            assert check(record, record["reference"])
            assert check_answer(record["prompt"], record["reference"])
            # Embedded in a chatty sentence, or after working: still accepted.
            assert check(record, f"Let me think.\nOK, so the answer is {record['answer']}. Hope this helps!")
            wrong = wrong_answer(spec, rng, world)
            wrong_response = render_answer(spec, wrong.value, 0, wrong.working)
            assert not check(record, wrong_response), (record, wrong_response)
            assert not check_answer(record["prompt"], wrong_response)
            tasks.add(record["task"])
    assert tasks == {"arithmetic", "reverse", "sort_letters", "count_letter"}


def test_test_problems_do_not_appear_in_training(tiny_dir):
    train = {r["prompt"][-1]["content"] for r in read_jsonl(tiny_dir / "verifiable/train.jsonl")}
    test = {r["prompt"][-1]["content"] for r in read_jsonl(tiny_dir / "verifiable/test.jsonl")}
    assert not train & test


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("The answer is 42.", "42"),
        ("12 + 30 = 42.\nThe answer is 42.", "42"),
        ("First I thought the answer is 41. Checking again, the answer is 42.", "42"),
        ("the answer is **Port Quillan**.", "Port Quillan"),
        ('The answer is "lertsek".', "lertsek"),
        ("The answer is 3.5.", "3.5"),
        ("The answer is 1,234. Done.", "1,234"),
        ("Final answer: 17:00", "17:00"),
        ("Thinking...\n42", "42"),
        ("A long sentence with many words but no final answer in it at all.", None),
        ("", None),
    ],
)
def test_extract_final_answer(response, expected):
    assert extract_final_answer(response) == expected


def test_numbers_compare_as_integers():
    record = {"task": "arithmetic", "answer": "1234"}
    assert check(record, "The answer is 1,234.")
    assert check(record, "The answer is 1000 + 234 = 1234.")
    assert not check(record, "The answer is 1234 or 1235.")
    assert not check(record, "The answer is 12345.")


def test_checker_reports_records_it_cannot_check():
    with pytest.raises(ChatforgeError, match="missing field"):
        check({"id": "x", "task": "arithmetic"}, "The answer is 1.")
    with pytest.raises(ChatforgeError, match="has no checker"):
        check({"id": "x", "task": "fact", "answer": "Ambervale"}, "The answer is Ambervale.")
