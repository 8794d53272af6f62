"""SFT record formats: detection, normalisation to messages, rejects with reasons, system prompts."""

from __future__ import annotations

import json

import pytest

from chatforge.errors import DataError
from chatforge.run_dir import RejectLog
from chatforge.sft.formats import (
    ChatSourceConfig,
    Conversation,
    RecordError,
    SystemPrompts,
    read_conversation_file,
    read_conversations,
    to_messages,
)

SYS = {"role": "system", "content": "Be brief."}
Q1 = {"role": "user", "content": "What is 2+2?"}
A1 = {"role": "assistant", "content": "The answer is 4."}
Q2 = {"role": "user", "content": "Reverse abc.\n\nabc"}
A2 = {"role": "assistant", "content": "The answer is cba."}


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records))
    return path


def read_rejects(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    ("record", "fmt", "messages", "extra"),
    [
        ({"id": 1, "messages": [SYS, Q1, A1, Q2, A2]}, "messages", [SYS, Q1, A1, Q2, A2], {"id": 1}),
        (
            {"id": 2, "task": "t", "system": "Be brief.", "conversations": [
                {"from": "human", "value": Q1["content"]}, {"from": "gpt", "value": A1["content"]}]},
            "sharegpt", [SYS, Q1, A1], {"id": 2, "task": "t"},
        ),
        (  # a system turn inside `conversations` instead of the top-level field
            {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": Q1["content"]},
                               {"from": "gpt", "value": A1["content"]}]},
            "sharegpt", [SYS, Q1, A1], {},
        ),
        (
            {"id": 3, "instruction": "Reverse abc.", "input": "abc", "output": A2["content"], "system": "Be brief.",
             "history": [[Q1["content"], A1["content"]]]},
            "alpaca", [SYS, Q1, A1, Q2, A2], {"id": 3},
        ),
        (  # no input, no system (empty and null both mean none), no history
            {"instruction": Q1["content"], "input": "", "output": A1["content"], "system": None},
            "alpaca", [Q1, A1], {},
        ),
        ({"prompt": Q1["content"], "completion": A1["content"], "system": "Be brief."}, "prompt_completion", [SYS, Q1, A1], {}),
        ({"prompt": [SYS, Q1], "completion": [A1], "score": 0.5}, "prompt_completion", [SYS, Q1, A1], {"score": 0.5}),
    ],
)
def test_each_format_normalises_to_messages(record, fmt, messages, extra):
    for forced in ("auto", fmt):
        assert to_messages(record, forced) == (messages, extra)


@pytest.mark.parametrize(
    ("record", "fmt", "reason", "detail"),
    [
        ({"text": "plain"}, "auto", "unknown_format", "fields: text"),
        ({"messages": [Q1, A1]}, "alpaca", "missing_field", "no field 'instruction'"),
        (["not", "an", "object"], "auto", "not_an_object", "got list"),
        ({"messages": "hi"}, "auto", "bad_field", "'messages' is a string"),
        ({"messages": [Q1, {"role": "assistant", "content": 4}]}, "auto", "bad_field", "messages[1].content is a number"),
        ({"conversations": [{"from": "human", "value": "hi"}, {"from": "bard", "value": "x"}]}, "auto", "unknown_role", "'bard'"),
        ({"messages": [Q1, {"role": "tool", "content": "x"}]}, "auto", "unknown_role", "'tool'"),
        ({"messages": [Q1, {"role": "assistant", "content": "  \n"}]}, "auto", "empty_content", "turn 1 (assistant)"),
        ({"instruction": "", "input": "", "output": "x"}, "auto", "empty_content", "turn 0 (user)"),
        ({"messages": [SYS, Q1]}, "auto", "no_assistant_turn", "no assistant turn"),
        ({"messages": [Q1, A1, Q2]}, "auto", "out_of_order", "last turn (2) is a user turn"),
        ({"messages": [A1, Q1, A1]}, "auto", "out_of_order", "turn 0 is 'assistant'"),
        ({"messages": [Q1, Q2, A1]}, "auto", "out_of_order", "turn 1 is 'user'"),
        ({"messages": [Q1, SYS, A1]}, "auto", "out_of_order", "turn 1 is 'system'"),
        ({"system": "x", "conversations": [{"from": "system", "value": "y"}, {"from": "human", "value": "q"},
                                           {"from": "gpt", "value": "a"}]}, "auto", "out_of_order", "turn 1 is 'system'"),
        ({"instruction": "q", "output": "a", "history": [["only one"]]}, "auto", "bad_field", "history[0]"),
        ({"prompt": "q", "completion": [Q1]}, "auto", "bad_field", "only assistant messages"),
    ],
)
def test_malformed_records_raise_with_reason(record, fmt, reason, detail):
    with pytest.raises(RecordError) as info:
        to_messages(record, fmt)
    assert info.value.reason == reason
    assert detail in info.value.detail


def test_reader_skips_bad_lines_with_file_line_and_reason(tmp_path):
    path = tmp_path / "mixed.jsonl"
    write_jsonl(path, [
        {"id": "ok1", "messages": [Q1, A1]},
        "{not json",
        {"id": "bad", "messages": [Q1]},
        "",  # blank lines are skipped silently (they hold no record)
        {"id": "ok2", "instruction": "Say hi.", "output": "hi"},
    ])
    with path.open("ab") as fh:
        fh.write(b'{"text": "\xff"}\n')
    with RejectLog(tmp_path / "rejected.jsonl") as rejects:
        got = list(read_conversation_file(path, rejects))
    assert [(c.where, c.extra["id"]) for c in got] == [("line 1", "ok1"), ("line 5", "ok2")]
    assert got[0] == Conversation([Q1, A1], str(path), "line 1", {"id": "ok1"})
    logged = read_rejects(tmp_path / "rejected.jsonl")
    assert [(r["source"], r["where"], r["reason"]) for r in logged] == [
        (str(path), "line 2", "bad_json"),
        (str(path), "line 3", "no_assistant_turn"),
        (str(path), "line 6", "not_utf8"),
    ]
    assert '"id": "bad"' in logged[1]["preview"]


def test_json_array_parquet_and_directories(tmp_path):
    records = [{"id": 0, "messages": [Q1, A1]}, {"id": 1, "conversations": [{"from": "human", "value": "x"}]}]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.json").write_text(json.dumps(records))
    from datasets import Dataset

    Dataset.from_list([{"instruction": "Say hi.", "input": None, "output": "hi"}]).to_parquet(str(tmp_path / "data" / "b.parquet"))
    (tmp_path / "data" / "notes.txt").write_text("ignored")
    rejects = RejectLog(None)
    got = list(read_conversation_file(tmp_path / "data", rejects))
    assert [(c.source.rsplit("/", 1)[1], c.where) for c in got] == [("a.json", "item 0"), ("b.parquet", "row 0")]
    assert got[1].messages == [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]
    assert rejects.counts == {"no_assistant_turn": 1}
    with pytest.raises(DataError, match="not found"):
        list(read_conversation_file(tmp_path / "missing.jsonl", rejects))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .jsonl"):
        list(read_conversation_file(tmp_path / "empty", rejects))


def test_system_prompts_per_task_type_and_default(tmp_path):
    prompts = SystemPrompts(by_task={"math": "You calculate."}, default="You help.")
    conv = Conversation([Q1, A1], "f", "line 1", {"task_type": "math"})
    assert prompts.apply(conv).messages == [{"role": "system", "content": "You calculate."}, Q1, A1]
    other = Conversation([Q1, A1], "f", "line 2", {"task_type": "poetry"})
    assert prompts.apply(other).messages[0] == {"role": "system", "content": "You help."}
    assert prompts.apply(Conversation([SYS, Q1, A1], "f", "line 3", {"task_type": "math"})).messages[0] == SYS
    assert SystemPrompts(by_task={"math": "You calculate."}).apply(other) is other  # no default: unchanged
    by_task_field = SystemPrompts(by_task={"fact": "Facts."}, task_field="task")
    assert by_task_field.apply(Conversation([Q1, A1], "f", "l", {"task": "fact"})).messages[0]["content"] == "Facts."
    with pytest.raises(ValueError, match="blank system prompt"):
        SystemPrompts(by_task={"math": " "})

    path = write_jsonl(tmp_path / "d.jsonl", [{"task_type": "math", "prompt": "1+1?", "completion": "2"}])
    [read] = read_conversations([ChatSourceConfig(path=str(path))], RejectLog(None), prompts)
    assert read.messages[0]["content"] == "You calculate."


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from chatforge.world import write_world

    out = tmp_path_factory.mktemp("world")
    write_world(out, seed=1234, size="tiny")
    return out


@pytest.mark.parametrize("split", ["train", "test"])
def test_world_instruction_files_read_to_the_same_conversations(tiny_world, split):
    rejects = RejectLog(None)
    by_format = {}
    for suffix, fmt in (("", "messages"), ("_alpaca", "alpaca"), ("_sharegpt", "sharegpt")):
        convs = list(read_conversation_file(tiny_world / f"instructions/{split}{suffix}.jsonl", rejects))
        assert all(to_messages(json.loads(line), fmt)[0] == c.messages for c, line in zip(
            convs, (tiny_world / f"instructions/{split}{suffix}.jsonl").read_text().splitlines()))
        by_format[fmt] = [(c.extra["id"], c.messages) for c in convs]
    assert rejects.total == 0
    assert len(by_format["messages"]) > 50
    assert by_format["alpaca"] == by_format["messages"] == by_format["sharegpt"]
    multi = [m for _, m in by_format["messages"] if sum(x["role"] == "assistant" for x in m) > 1]
    assert multi, "the world has multi-turn conversations"
    # The messages file carries the task type, so per-task system prompts can be keyed on it.
    first = next(read_conversation_file(tiny_world / f"instructions/{split}.jsonl", rejects))
    assert {"task", "task_type", "answers"} <= set(first.extra)
