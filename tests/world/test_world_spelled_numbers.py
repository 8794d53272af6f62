"""Numbers spelled digit by digit ("3 3 9 + 7 5 = 4 1 4"), as a world with spelled numbers writes its
arithmetic (examples/world/arithmetic_formats.py --spelled-numbers): the world's question reader and
answer checker read them as the numbers they spell, and the rewrite asks the same problems."""

from __future__ import annotations

from world_files import read_jsonl

from chatforge.world import spec_from_prompt
from chatforge.world.answers import parse_number
from chatforge.world.arithmetic_drill import record_problems
from chatforge.world.prompts import operand, read_question, spell_digits
from chatforge.world.reward import check_answer
from script_loader import load_script


def test_spell_digits_spells_every_number_and_nothing_else():
    assert spell_digits("Compute 339 + 75.\nOnes: 9 + 5 = 14, write 4.") == "Compute 3 3 9 + 7 5.\nOnes: 9 + 5 = 1 4, write 4."
    assert spell_digits("no numbers, one 7") == "no numbers, one 7"
    assert operand("3 3 9") == operand("339") == 339


def test_spelled_answers_parse_as_numbers():
    assert parse_number("4 1 4") == 414
    assert parse_number("3 3 9 + 7 5 = 4 1 4") == 414  # the number after the last "="
    assert parse_number("-4 1") == -41
    assert parse_number("414") == 414 and parse_number("12 + 30 = 42") == 42  # plain numbers as before
    assert parse_number("1 2 3 and 4") is None  # two numbers: ambiguous, as before
    assert parse_number("4 1 4 5 6") == 41456


def test_spelled_question_is_read_and_checked():
    prompt = [{"role": "user", "content": "What do you get when you work out 3 3 9 + 7 5?"}]
    question = read_question(prompt[0]["content"])
    assert question.task == "arithmetic" and question.fields == {"a": "3 3 9", "op": "+", "b": "7 5"}
    spec = spec_from_prompt(prompt)
    assert (spec.a, spec.op, spec.b, spec.answer) == (339, "+", 75, "414")
    assert check_answer(prompt, "So 3 3 9 + 7 5 = 4 1 4.\nThe answer is 4 1 4.")
    assert check_answer(prompt, "The answer is 414.")
    assert not check_answer(prompt, "The answer is 4 1 5.")
    assert not check_answer(prompt, "The answer is 4 1 4 1.")


def test_spelled_world_asks_the_same_problems_and_accepts_its_own_answers(tiny_dir):
    formats = load_script("examples/world/arithmetic_formats.py")
    before = [formats.rewrite_record(r, "aligned") for r in read_jsonl(tiny_dir / "instructions/test.jsonl")]
    after = [formats.spell_record(r) for r in before]
    assert record_problems(after) == record_problems(before)
    spelled_turns = 0
    for old, new in zip(before, after):
        for old_m, new_m in zip(old["messages"], new["messages"]):
            if old_m["content"] == new_m["content"]:
                continue
            spelled_turns += 1
            assert new_m["role"] in ("user", "assistant")
        if new["task"] not in ("arithmetic", "conversation"):
            assert new == old
        last_question = read_question(new["messages"][-2]["content"])
        if last_question is not None and last_question.task == "arithmetic":
            answer = new["messages"][-1]["content"]
            assert new["answers"][-1] == spell_digits(old["answers"][-1]) and " " in answer
            assert check_answer(new["messages"][:-1], answer)
            assert not any(len(n) > 1 for n in _numbers(answer)), answer  # every number spelled
    assert spelled_turns > 0


def _numbers(text: str) -> list[str]:
    import re

    return re.findall(r"\d+", text)
