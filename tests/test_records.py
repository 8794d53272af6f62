"""data.records (the one reader layer) and data.parsers (one parser per record kind), by hand."""

from __future__ import annotations

import json

import pytest

from chatforge.data.parsers import parse_pair, parse_ranking, prompt_messages
from chatforge.data.records import RecordError, expand_paths, jsonl_objects, read_records
from chatforge.errors import DataError
from chatforge.run_dir import RejectLog


def test_expand_paths_sorts_a_directory_and_names_what_is_missing(tmp_path):
    (tmp_path / "b.jsonl").write_text("{}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.json").write_text("[]")
    (tmp_path / "notes.txt").write_text("x")
    assert expand_paths(tmp_path) == [tmp_path / "b.jsonl", tmp_path / "sub" / "a.json"]
    assert expand_paths(tmp_path / "b.jsonl") == [tmp_path / "b.jsonl"]
    with pytest.raises(DataError, match=r"^pairs not found: .*nope"):
        expand_paths(tmp_path / "nope", "pairs not found")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no .jsonl/.json/.parquet files"):
        expand_paths(tmp_path / "empty")


def test_read_records_parses_every_record_and_rejects_by_reason_and_line(tmp_path):
    path = tmp_path / "in.jsonl"
    # line 1 starts with a byte order mark (editors on Windows write one): still a record
    path.write_bytes(b'\xef\xbb\xbf{"x": 1}\n{"x": 2}\n{oops\n\n{"y": 3}\n{"x": 1e999}\n')

    def parse(record, source, where):
        if "x" not in record:
            raise RecordError("missing_field", "no x")
        return (record["x"], where)

    with RejectLog(tmp_path / "rejected.jsonl") as rejects:
        got = list(read_records([path], parse, rejects))
    assert got == [(1, "line 1"), (2, "line 2")]
    rejected = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert [(r["where"], r["reason"]) for r in rejected] == [
        ("line 3", "bad_json"), ("line 5", "missing_field"), ("line 6", "non_finite_number"),
    ]
    assert all(r["source"] == str(path) for r in rejected)


def test_jsonl_objects_limits_skips_none_and_rejects_non_objects(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"k": 1}\n[1]\n{"k": 2}\n{"k": 3}\n{"k": 4}\n')
    rejects = RejectLog(None)
    odd = jsonl_objects(path, lambda r, s, w: r["k"] if r["k"] % 2 else None, rejects, limit=1)
    assert odd == [1] and dict(rejects.counts) == {}  # stopped after the first kept record
    every = jsonl_objects(path, lambda r, s, w: r["k"], rejects)
    assert every == [1, 2, 3, 4] and dict(rejects.counts) == {"not_an_object": 1}
    with pytest.raises(DataError, match=r"^prompts file not found: "):
        jsonl_objects(tmp_path / "nope.jsonl", lambda r, s, w: r, rejects, "prompts file")


def test_pair_layouts_read_to_one_prompt_and_two_answers():
    user, a, b = {"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "A"}, {"role": "assistant", "content": "B"}
    layouts = [
        {"prompt": "Hi?", "chosen": "A", "rejected": "B", "category": "c"},
        {"prompt": [user], "chosen": [a], "rejected": [b], "category": "c"},
        {"chosen": [user, a], "rejected": [user, b], "category": "c"},  # implicit prompt
        {"prompt": "Hi?", "chosen": [user, a], "rejected": [user, b], "category": "c"},  # whole conversations
    ]
    for record in layouts:
        read = parse_pair(record)
        assert (read.prompt, read.chosen, read.rejected, read.extra) == ([user], "A", "B", {"category": "c"})
    assert parse_pair({**layouts[0], "system": "Be kind."}).prompt == [{"role": "system", "content": "Be kind."}, user]
    for record, reason in [
        ({"prompt": "Hi?", "chosen": "A"}, "missing_field"),
        ({"chosen": [user, a], "rejected": [{"role": "user", "content": "Other"}, b]}, "prompt_mismatch"),
        ({"prompt": "Hi?", "chosen": [a, user, a], "rejected": "B"}, "multi_message_response"),
        ({"prompt": 3, "chosen": "A", "rejected": "B"}, "bad_field"),
        (["not", "an", "object"], "not_an_object"),
    ]:
        with pytest.raises(RecordError) as info:
            parse_pair(record)
        assert info.value.reason == reason


def test_ranking_and_prompt_parsers():
    read = parse_ranking({"prompt": "Q", "responses": ["x", "y", "z"], "ranks": [0, 1, 1], "rewards": [1, 0, 0]})
    assert (read.prompt, read.responses, read.ranks, read.extra) == ([{"role": "user", "content": "Q"}], ["x", "y", "z"], [0, 1, 1], {"rewards": [1, 0, 0]})
    assert parse_ranking({"prompt": "Q", "responses": ["x", "y"]}).ranks == [0, 1]  # best first
    with pytest.raises(RecordError, match="too_few_responses"):
        parse_ranking({"prompt": "Q", "responses": ["x"]})
    user, answer = {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}
    assert prompt_messages({"messages": [user, answer]}) == [user]  # the reference answer is not the prompt
    assert prompt_messages({"prompt": "Q"}) == [user]
    with pytest.raises(RecordError, match="bad_field: record 7: needs a 'prompt' or 'messages' field"):
        prompt_messages({"id": 7})
