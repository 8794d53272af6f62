"""Every record reader, fuzzed: a JSONL file of valid records mixed with hostile lines (random bytes,
random JSON, other encodings, deep nesting, huge integers, lone surrogates), with or without a BOM
and CRLF line ends, is read without an exception; every valid record comes out, in order, and
every other non-blank line is in the reject log with a reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatforge.data.corpus import SourceConfig, read_documents
from chatforge.data.records import jsonl_objects
from chatforge.dpo.data import PairSourceConfig, read_pairs
from chatforge.rm.data import PreferenceSourceConfig, read_groups
from chatforge.run_dir import RejectLog
from chatforge.sft.formats import read_conversation_file

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(str.strip)

# One generator of valid records per reader, and the reader: path, reject log -> what it read.
VALID = {
    "pretrain text": st.builds(lambda t: {"text": t}, _text),
    "sft messages": st.builds(lambda q, a: {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}, _text, _text),
    "dpo pair": st.builds(lambda p, c, r: {"prompt": p, "chosen": c, "rejected": r + "!"}, _text, _text, _text).filter(
        lambda d: d["chosen"] != d["rejected"]),
    "rm ranking": st.builds(lambda p, a, b: {"prompt": p, "responses": [a, b + "?"]}, _text, _text, _text).filter(
        lambda d: d["responses"][0] != d["responses"][1]),
    "prompts": st.builds(lambda p: {"prompt": p}, _text),
}


def _prompt(record: dict, source: str, where: str) -> str:
    from chatforge.data.records import RecordError

    if not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
        raise RecordError("bad_field", "no prompt")
    return record["prompt"]


READERS: dict[str, Callable[[Path, RejectLog], list]] = {
    "pretrain text": lambda p, r: list(read_documents([SourceConfig(path=str(p))], r)),
    "sft messages": lambda p, r: list(read_conversation_file(p, r)),
    "dpo pair": lambda p, r: list(read_pairs([PairSourceConfig(path=str(p))], r)),
    "rm ranking": lambda p, r: read_groups([PreferenceSourceConfig(path=str(p))], r, None, False),
    "prompts": lambda p, r: jsonl_objects(p, _prompt, r),
}

# Lines no reader may accept: they are not JSON objects of any record kind, or JSON that is hostile.
_hostile = st.sampled_from([
    b"[" * 5000 + b"]" * 5000,
    b'{"text": ' + b"7" * 5000 + b"}",
    b'{"text": "\\ud800", "prompt": "\\udfff"}',
    b'{"text": NaN}',
    b'{"text": 1e999}',
    b"\xff\xfe{\x00}\x00",
])
_garbage = st.one_of(
    _hostile,
    st.binary(min_size=1, max_size=40),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8), lambda c: st.lists(c, max_size=3),
                 max_leaves=6).map(lambda v: json.dumps(v).encode()),
    st.text(max_size=20).map(lambda t: json.dumps({"unrelated": t}).encode("utf-16")),  # another encoding
).map(lambda b: b.replace(b"\n", b" ")).filter(lambda b: b.removeprefix(b"\xef\xbb\xbf").strip())  # a lone BOM is blank


@st.composite
def jsonl_files(draw, kind: str):
    valid = draw(st.lists(VALID[kind], max_size=6))
    garbage = draw(st.lists(_garbage, max_size=6))
    lines = [json.dumps(v, ensure_ascii=draw(st.booleans())).encode() for v in valid] + garbage
    order = draw(st.permutations(range(len(lines))))
    body = [lines[i] for i in order]
    blank = draw(st.booleans())
    if blank:
        body.insert(draw(st.integers(0, len(body))), b"   ")
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + newline.join(body) + newline
    return data, valid, [lines[i] for i in order if i >= len(valid)]


def _check(kind: str, tmp: Path, data: bytes, valid: list, garbage: list) -> None:
    path = tmp / "records.jsonl"
    path.write_bytes(data)
    with RejectLog(tmp / "rejected.jsonl") as rejects:
        out = READERS[kind](path, rejects)
    entries = [json.loads(line) for line in (tmp / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(out) == len(valid), (len(out), len(valid), [e["reason"] for e in entries])
    assert len(entries) == len(garbage) == rejects.total
    assert all(e["reason"] and e["where"].startswith("line ") for e in entries)


def _fuzz(kind: str):
    @FUZZ
    @given(jsonl_files(kind))
    def test(tmp_path_factory, case):
        _check(kind, tmp_path_factory.mktemp("f"), *case)

    test.__name__ = f"test_{kind.replace(' ', '_')}_reader_reads_every_valid_record_and_rejects_the_rest"
    return test


test_pretrain_text_reader = _fuzz("pretrain text")
test_sft_reader = _fuzz("sft messages")
test_dpo_reader = _fuzz("dpo pair")
test_rm_reader = _fuzz("rm ranking")
test_prompt_reader = _fuzz("prompts")


def test_a_bom_before_the_first_record_loses_nothing(tmp_path):
    record = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    data = b"\xef\xbb\xbf" + json.dumps(record).encode() + b"\n" + json.dumps(record).encode() + b"\n"
    _check("sft messages", tmp_path, data, [record, record], [])
