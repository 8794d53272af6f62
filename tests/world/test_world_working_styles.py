"""Arithmetic working styles (world.solutions.worked_lines) and the script that rewrites a world in one
(examples/world/arithmetic_formats.py): hand-written solutions, every digit list agreeing with the
result, and a rewritten world that asks the same problems with the same answers."""

from __future__ import annotations

import random

import pytest
from world_files import read_jsonl

from chatforge.world import check, spec_from_prompt
from chatforge.world.arithmetic_drill import record_problems
from chatforge.world.solutions import WORKING_STYLES, compute, worked_lines
from script_loader import load_script


def test_ones_first_and_aligned_written_out_by_hand():
    assert worked_lines(478, "+", 56, "ones_first") == [
        "Ones: 8 + 6 = 14, write 4 and carry 1.",
        "Tens: 7 + 5 + 1 = 13, write 3 and carry 1.",
        "Hundreds: 4 + 0 + 1 = 5, write 5.",
        "Written ones first: 4 3 5.",
        "In order: 5 3 4.",
        "So 478 + 56 = 534.",
    ]
    assert worked_lines(52, "-", 47, "aligned") == [
        "Ones first: 2 5 - 7 4.",
        "Ones: 2 - 7 needs a borrow, so 12 - 7 = 5, write 5.",
        "Tens: 5 - 4 - 1 = 0, write 0.",
        "Written ones first: 5 0.",
        "In order: 5.",  # leading zeros dropped
        "So 52 - 47 = 5.",
    ]
    assert worked_lines(99, "+", 1, "ones_first")[2:4] == ["Hundreds: write the carry, 1.", "Written ones first: 0 0 1."]
    assert worked_lines(47, "*", 6, "ones_first") == ["47 × 6 = 40 × 6 + 7 × 6", "= 240 + 42", "= 282", "So 47 × 6 = 282."]
    assert worked_lines(47, "*", 6) == ["47 × 6 = 282.", "So 47 × 6 = 282."]  # "columns" keeps the older working
    assert worked_lines(11, "+", 36) == ["Ones: 1 + 6 = 7, write 7.", "Tens: 1 + 3 = 4, write 4.", "So 11 + 36 = 47."]


@pytest.mark.parametrize("style", ["ones_first", "aligned"])
def test_digit_lists_spell_the_result(style):
    rng = random.Random(0)
    for _ in range(500):
        op = rng.choice("+-")
        a, b = rng.randrange(1, 10_000), rng.randrange(1, 10_000)
        a, b = (max(a, b), min(a, b)) if op == "-" else (a, b)
        lines = worked_lines(a, op, b, style)
        written = next(line for line in lines if line.startswith("Written ones first: "))
        in_order = next(line for line in lines if line.startswith("In order: "))
        digits = written.removeprefix("Written ones first: ").rstrip(".").split()
        assert ("".join(reversed(digits)).lstrip("0") or "0") == in_order.removeprefix("In order: ").rstrip(".").replace(" ", "")
        assert int(in_order.removeprefix("In order: ").rstrip(".").replace(" ", "")) == compute(a, op, b)
        assert lines[-1] == f"So {a} {'+' if op == '+' else '-'} {b} = {compute(a, op, b)}."
        if style == "aligned":
            assert lines[0] == f"Ones first: {' '.join(str(a)[::-1])} {op} {' '.join(str(b)[::-1])}."


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="working style 'backwards'"):
        worked_lines(1, "+", 2, "backwards")
    assert WORKING_STYLES == ("columns", "ones_first", "aligned")


def test_rewritten_world_asks_the_same_problems_with_worked_answers(tiny_dir, tmp_path):
    formats = load_script("examples/world/arithmetic_formats.py")
    before = read_jsonl(tiny_dir / "instructions/test.jsonl")
    after = [formats.rewrite_record(r, "aligned") for r in before]
    assert record_problems(after) == record_problems(before)
    arithmetic = 0
    for old, new in zip(before, after):
        if old["task"] != "arithmetic":
            assert new == old
            continue
        arithmetic += 1
        assert new["answers"] == old["answers"] and new["messages"][1] == old["messages"][1]
        assert new["messages"][0]["content"] == formats.WORKED_SYSTEM
        spec = spec_from_prompt(old["messages"][:2])
        answer = new["messages"][2]["content"]
        assert answer.splitlines()[0] == worked_lines(spec.a, spec.op, spec.b, "aligned")[0]
        assert check({"task": "arithmetic", "answer": spec.answer}, answer)
    assert arithmetic > 0
    text = "Worked sums\n\n18 + 35 = 53\n\nCompute 11 + 36.\nOnes: 1 + 6 = 7, write 7.\nTens: 1 + 3 = 4, write 4.\nSo 11 + 36 = 47."
    assert formats.rewrite_text(text, "ones_first") == (
        "Worked sums\n\n18 + 35 = 53\n\nCompute 11 + 36.\nOnes: 1 + 6 = 7, write 7.\nTens: 1 + 3 = 4, write 4.\n"
        "Written ones first: 7 4.\nIn order: 4 7.\nSo 11 + 36 = 47."
    )
