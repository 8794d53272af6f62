"""Extra arithmetic SFT records (world.arithmetic_drill): world prompts, right answers with working,
no held-out problem, deterministic, and the world's own files untouched."""

from __future__ import annotations

from world_files import read_jsonl

from chatforge.world import check, spec_from_prompt
from chatforge.world.arithmetic_drill import drill_records, record_problems, world_problems
from chatforge.world.solutions import worked_lines


def test_drill_records_are_world_prompts_with_worked_right_answers():
    records = drill_records(seed=1234, count=300)
    assert [r["id"] for r in records[:2]] == ["drill-000000", "drill-000001"]
    ops, asked = set(), 0
    for record in records:
        messages = record["messages"]
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
        spec = spec_from_prompt(messages[:2])
        assert record["answers"] == [spec.answer] and record["task"] == record["task_type"] == "arithmetic"
        answer = messages[2]["content"]
        assert check({"task": "arithmetic", "answer": spec.answer}, answer)
        assert answer.startswith(worked_lines(spec.a, spec.op, spec.b)[0])  # working even where not asked
        assert answer.endswith(f"The answer is {spec.answer}.")
        ops.add(spec.op)
        asked += spec.worked
    assert ops == {"+", "-", "*"} and 0.15 < asked / len(records) < 0.45  # the world's share asks for working
    brief = drill_records(seed=1234, count=300, always_worked=False)
    assert [r["messages"][:2] for r in brief] == [r["messages"][:2] for r in records]
    assert any("\n" not in r["messages"][2]["content"] for r in brief)
    assert drill_records(seed=1234, count=300) == records and drill_records(seed=5, count=300) != records


def test_drill_keeps_out_every_world_problem(tiny_dir):
    manifest_before = (tiny_dir / "manifest.json").read_text()
    held_out = world_problems(tiny_dir)
    test = record_problems(read_jsonl(tiny_dir / "verifiable/test.jsonl"))
    assert test and test <= held_out
    assert record_problems(read_jsonl(tiny_dir / "instructions/test.jsonl")) <= held_out
    drilled = record_problems(drill_records(seed=1234, count=2000, exclude=held_out))
    assert len(drilled) == 2000 and not drilled & held_out
    assert (tiny_dir / "manifest.json").read_text() == manifest_before
