"""JSONL files are split at "\\n" only: U+2028, U+2029 and U+0085 are legal unescaped inside a JSON
string (json.dumps(..., ensure_ascii=False) writes them as they are), and str.splitlines would cut
such a record in two."""

from __future__ import annotations

import json

from chatforge.data.safe_json import jsonl_lines

SEPARATORS = "a\u2028b\u2029c\x85d"  # line separator, paragraph separator, next line


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def test_jsonl_lines_keeps_unicode_separators_inside_strings():
    text = _jsonl([{"id": "p1", "text": SEPARATORS}, {"id": "p2", "text": "plain"}])
    assert len(text.splitlines()) == 5  # what the readers did: the first record cut into four pieces
    lines = list(jsonl_lines(text))
    assert [n for n, _ in lines] == [1, 2]
    assert [json.loads(line) for _, line in lines] == [{"id": "p1", "text": SEPARATORS}, {"id": "p2", "text": "plain"}]


def test_jsonl_lines_numbers_lines_past_blank_ones_and_drops_crlf():
    text = '{"a": 1}\r\n\n   \n{"a": 2}'  # CRLF ending, two blank lines, no final newline
    assert list(jsonl_lines(text)) == [(1, '{"a": 1}'), (4, '{"a": 2}')]


def test_rest_resumed_e_step_reads_samples_with_separators(tmp_path):
    from chatforge.stages.rest import _e_step

    path = tmp_path / "samples.jsonl"
    path.write_text(_jsonl([
        {"id": "q1", "response": f"x = 1{SEPARATORS}", "reward": 1.0},
        {"id": "q2", "response": "no", "reward": 0.0},
    ]), encoding="utf-8")
    # an existing samples.jsonl is a finished E-step: read back, nothing sampled (cfg, model, scorer unused)
    scored = _e_step(None, "unused", [], None, path, iteration=2)
    assert [(s.prompt_id, s.response, s.reward, s.round) for s in scored] == [
        ("q1", f"x = 1{SEPARATORS}", 1.0, 2), ("q2", "no", 0.0, 2),
    ]


def test_bon_rescoring_reads_samples_with_separators(tmp_path):
    from chatforge.run_dir import RejectLog
    from chatforge.stages import bon

    samples = tmp_path / "samples.jsonl"
    samples.write_text(_jsonl([{"id": "q1", "responses": [SEPARATORS, "two"]}]), encoding="utf-8")
    cfg = bon.Config(samples=str(samples), data={"sources": str(tmp_path / "prompts.jsonl")}, n_max=2)
    records = [{"id": "q1", "prompt": [{"role": "user", "content": "hi"}], "_source": "prompts.jsonl", "_where": "line 1"}]
    with RejectLog(None) as rejects:
        kept, texts = bon._earlier_samples(cfg, records, rejects)
    assert texts == [[SEPARATORS, "two"]]
    assert kept == records and rejects.total == 0


def test_synth_seeds_and_decontam_items_keep_separators(tmp_path):
    from chatforge.clean.decontam import read_items
    from chatforge.stages.synth import read_seeds

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(_jsonl([{"instruction": f"say {SEPARATORS}", "output": "ok"}]), encoding="utf-8")
    [task] = read_seeds(str(seeds))
    assert task.instruction == f"say {SEPARATORS}"
    items = tmp_path / "eval.jsonl"
    items.write_text(_jsonl([{"question": SEPARATORS, "answer": "A"}]), encoding="utf-8")
    assert read_items(items) == [[SEPARATORS, "A"]]
