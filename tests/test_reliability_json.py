"""Hostile JSON never crashes a reader: `decode_json` reads a value or names a reason, and the reject
log takes any record, lone surrogates and deep nesting included."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatforge.data.safe_json import MAX_DEPTH, JsonRejected, decode_json, nesting_depth
from chatforge.run_dir import RejectLog

REASONS = {"not_utf8", "bad_json", "too_deep", "number_too_long", "non_finite_number", "lone_surrogate"}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _reason(raw) -> str:
    with pytest.raises(JsonRejected) as info:
        decode_json(raw)
    return info.value.reason


def test_a_leading_bom_is_dropped_not_a_lost_record():
    assert decode_json(b'\xef\xbb\xbf{"text": "first"}') == {"text": "first"}
    assert decode_json('\ufeff{"text": "first"}') == {"text": "first"}


def test_the_crashes_of_the_audit_are_reasons():
    assert _reason("[" * 200_000 + "]" * 200_000) == "too_deep"  # RecursionError in json.loads
    assert _reason('{"n": ' + "7" * 5000 + "}") == "number_too_long"  # ValueError (int digits limit)
    assert _reason('{"text": "\\ud800"}') == "lone_surrogate"  # TypeError later, at tokenisation
    assert _reason('{"text": "ok", "\\udfff": 1}') == "lone_surrogate"  # in a key
    assert _reason('[1, "a\ud800"]') == "lone_surrogate"  # a raw surrogate in a str input
    assert _reason("NaN") == "non_finite_number"
    assert _reason('{"x": 1e999}') == "non_finite_number"
    assert _reason(b'{"x": "\xff"}') == "not_utf8"
    assert _reason('{"x": ') == "bad_json"


def test_limits_are_inclusive_and_pairs_are_text():
    assert decode_json("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    assert _reason("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)) == "too_deep"
    assert decode_json("-" + "9" * 64) == -int("9" * 64)
    assert decode_json('"\\ud83d\\ude00"') == "\U0001f600"  # an escaped surrogate *pair* is one character


def test_brackets_inside_strings_do_not_count_as_nesting():
    text = json.dumps({"t": "[" * 500 + '\\"{' * 100})
    assert nesting_depth(text) == 1
    assert decode_json(text)["t"].startswith("[[[")


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def _has_surrogate(value) -> bool:
    text = json.dumps(value, ensure_ascii=False)
    return any("\ud800" <= c <= "\udfff" for c in text)


@FUZZ
@given(_json_values, st.booleans(), st.booleans())
def test_any_json_value_reads_back_equal_or_names_a_surrogate(value, ascii_only, bom):
    text = json.dumps(value, ensure_ascii=ascii_only)
    raw = ("\ufeff" if bom else "") + text
    if _has_surrogate(value):
        assert _reason(raw) == "lone_surrogate"
    else:
        assert decode_json(raw) == value
        assert decode_json(raw.encode("utf-8")) == value


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_random_bytes_are_read_or_rejected_with_a_known_reason(raw):
    try:
        decode_json(raw)
    except JsonRejected as exc:
        assert exc.reason in REASONS and exc.detail


@FUZZ
@given(st.text(max_size=200), st.sampled_from(["utf-8", "utf-16", "latin-1", "cp1252"]))
def test_text_in_other_encodings_is_read_or_rejected(text, encoding):
    raw = json.dumps({"text": text}, ensure_ascii=False).encode(encoding, "replace")
    try:
        decode_json(raw)
    except JsonRejected as exc:
        assert exc.reason in REASONS


def test_reject_log_writes_lone_surrogates_and_deep_records(tmp_path):
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    path = tmp_path / "rejected.jsonl"
    with RejectLog(path) as log:
        log.add("in\udcff.jsonl", "line 1", "lone_surrogate", "detail \ud800", {"text": "\ud800 é"})
        log.add("in.jsonl", 2, "too_deep", record=deep)
        log.add("in.jsonl", "line 3", "bad_json", record="\udc80raw")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first["source"] == "in\udcff.jsonl" and first["preview"] == '{"text": "\ud800 é"}'
    assert "é" in lines[0]  # non-ASCII text stays readable
    assert json.loads(lines[1])["preview"] == "<a list nested too deep to show>"


@FUZZ
@given(st.lists(st.tuples(st.text(max_size=20), st.text(max_size=50), _json_values), max_size=5))
def test_reject_log_never_fails_and_keeps_one_line_per_record(tmp_path_factory, entries):
    path = tmp_path_factory.mktemp("log") / "rejected.jsonl"
    with RejectLog(path) as log:
        for where, detail, record in entries:
            log.add("src", where, "reason", detail, record)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(entries) == log.total
    assert all(json.loads(line)["reason"] == "reason" for line in lines)
