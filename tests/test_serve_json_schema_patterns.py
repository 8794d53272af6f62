"""`pattern` and `format` on strings (sampling/json_pattern.py, through greenery's regex automata): by
hand (refusals at the exact byte, anchors, UTF-8, escapes), every calendar string against Python's
`datetime`, strings drawn from the regex itself accepted whole, mutated documents complete exactly
when the validator (`re.search`, the standard library's date parsers) says so, a tiny random model's
samples over several seeds, and the server through the openai client."""

from __future__ import annotations

import datetime
import itertools
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatforge.sampling import Sampler
from chatforge.sampling.json_schema import SchemaError, compile_schema
from schema_validator import (
    accepts,
    complete,
    sampled_documents,
    served_documents,
    valid,
)
from tiny_models import make_tiny_model

SCHEMA = {
    "type": "object",
    "properties": {
        "day": {"type": "string", "format": "date"},
        "at": {"type": "string", "format": "date-time"},
        "clock": {"type": "string", "format": "time"},
        "id": {"type": "string", "format": "uuid"},
        "mail": {"type": "string", "format": "email", "maxLength": 12},
        "ip": {"type": "string", "format": "ipv4"},
        "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{1,3}$"},
        "greek": {"type": "string", "pattern": "^[\u03b1-\u03c9]+$", "minLength": 2, "maxLength": 3},
        "has": {"type": "string", "pattern": "ab", "maxLength": 4},  # unanchored: "ab" anywhere
        "quote": {"type": "string", "pattern": '^a"b/$'},
    },
    "required": ["day", "code"],
    "additionalProperties": False,
}


def refused_at(schema: dict, bad: str | bytes, ok_until: str | bytes) -> bool:
    bad, ok_until = (x if isinstance(x, bytes) else x.encode() for x in (bad, ok_until))
    state = accepts(schema, ok_until)
    return bad.startswith(ok_until) and state is not None and not state.feed_all(bad[len(ok_until):])


def test_hand_cases():
    for good in ['{"day":"2024-02-29","code":"AB-1"}', '{"code":"ZZ-999","day":"2000-02-29","ip":"255.0.10.1"}',
                 '{"day":"1999-12-31","code":"AA-0","at":"2024-01-31T23:59:59.123456Z","clock":"00:00:00+05:30"}',
                 '{"day":"0001-01-01","code":"QQ-12","id":"123e4567-E89B-12d3-a456-426614174000","mail":"a.b@c.de"}',
                 '{"day":"2023-04-30","code":"AB-1","greek":"\u03b1\u03c9","has":"xaby","quote":"a\\"b\\/"}',
                 '{"day":"2023-04-30","code":"AB-1","has":"ab","quote":"a\\"b/"}']:
        assert complete(SCHEMA, good) and valid(json.loads(good), SCHEMA), good
    for bad, ok_until in [
        ('{"day":"2023-02-29', '{"day":"2023-02-2'),  # 2023 is no leap year
        ('{"day":"1900-02-29', '{"day":"1900-02-2'), ('{"day":"2023-04-31', '{"day":"2023-04-3'),
        ('{"day":"2023-13', '{"day":"2023-1'), ('{"day":"0000', '{"day":"000'), ('{"day":"2023-1-', '{"day":"2023-1'),
        ('{"day":"2023-01-01T', '{"day":"2023-01-01'),
        ('{"at":"2024-01-31t', '{"at":"2024-01-31'), ('{"at":"2024-01-31T24', '{"at":"2024-01-31T2'),
        ('{"at":"2024-01-31T23:59:59"', '{"at":"2024-01-31T23:59:59'),  # an offset is required
        ('{"clock":"12:6', '{"clock":"12:'),  # minutes 00..59
        ('{"id":"123e4567-e89b-12d3-a456-42661417400g', '{"id":"123e4567-e89b-12d3-a456-42661417400'),
        ('{"mail":"a..', '{"mail":"a.'), ('{"mail":"a@b"', '{"mail":"a@b'), ('{"mail":"abcdefghi', '{"mail":"abcdefgh'),  # 9 + len("@x.y") > maxLength 12
        ('{"ip":"256', '{"ip":"25'), ('{"ip":"01', '{"ip":"0'),
        ('{"code":"Ab', '{"code":"A'), ('{"code":"AB-1234', '{"code":"AB-123'), ('{"code":"AB-"', '{"code":"AB-'),
        ('{"code":"AB-1\\', '{"code":"AB-1'),  # no escape stands for a digit here
        ('{"quote":"a\\u0022', '{"quote":"a\\'),  # \\" is taken, \\u is not (no \\u escapes under a pattern)
        ('{"greek":"\u03b1"', '{"greek":"\u03b1'),  # minLength 2
        ('{"greek":"\u03b1\u03b2\u03b3\u03b4', '{"greek":"\u03b1\u03b2\u03b3'),
        (b'{"greek":"\xe4', b'{"greek":"'),  # a lead byte whose characters are all outside the class
        (b'{"greek":"\xce\xb0', b'{"greek":"\xce'),  # U+03B0, just below alpha
        ('{"has":"xyz', '{"has":"xy'),  # then "ab" no longer fits in 4 characters
        ('{"has":"a\\tb', '{"has":"a'), ('{"quote":"a\\n', '{"quote":"a\\'),
    ]:
        assert refused_at(SCHEMA, bad, ok_until), (bad, ok_until)


def test_dates_are_exactly_the_calendar_days():
    """Every YYYY-MM-DD with month 00..13 and day 00..32 for years around leap rules: the automaton
    completes exactly the strings Python's `date.fromisoformat` reads."""
    schema = {"type": "object", "properties": {"d": {"type": "string", "format": "date"}}}
    for year, month, day in itertools.product([1, 1900, 1999, 2000, 2023, 2024, 2100, 2400], range(14), range(33)):
        text = f"{year:04d}-{month:02d}-{day:02d}"
        try:
            datetime.date.fromisoformat(text)
            real = True
        except ValueError:
            real = False
        assert complete(schema, json.dumps({"d": text})) == real, text


@pytest.mark.parametrize("pattern", [r"^[A-Z]{2}-[0-9]{1,3}$", r"ab", r"^(red|gr[ae]y)+$", r"^[\u03b1-\u03c9 ]{0,4}x$",
                                     r"^\d{3}(-\d{4})?$", r'^[^"\\]*$'])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_strings_of_the_pattern_are_accepted(pattern, data):
    # re.ASCII: \\d and \\w as ECMA 262 (JSON Schema's dialect) and greenery read them, not Python's Unicode classes
    text = data.draw(st.from_regex(re.compile(pattern, re.ASCII), fullmatch=True).filter(
        lambda s: all(c == "\t" or " " <= c and c not in "\u2028\u2029" for c in s) and len(s) <= 12))
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": pattern}}}
    doc = json.dumps({"s": text}, ensure_ascii=False)
    assert complete(schema, doc) == (re.search(pattern, text, re.ASCII) is not None), doc


_doc = st.fixed_dictionaries({"day": st.dates().map(str), "code": st.from_regex(r"[A-Z]{2}-[0-9]{1,3}", fullmatch=True)},
                             optional={"id": st.uuids().map(str), "ip": st.ip_addresses(v=4).map(str),
                                       "greek": st.text("\u03b1\u03b2\u03c9", min_size=2, max_size=3)})
_ALPHABET = list('{}":,-0123456789AZaz\\') + ["\u03b1", "\u03c9", "\u00e9", "\\u0041", "-02-29", "2023"]


@settings(max_examples=300, deadline=None)
@given(_doc, st.lists(st.tuples(st.integers(0, 200), st.sampled_from(["del", "ins", "rep"]), st.sampled_from(_ALPHABET)),
                      min_size=1, max_size=2))
def test_complete_exactly_when_valid(doc, edits):
    """Mutated documents: complete exactly when they parse, validate, repeat no key and write no `\\u`
    escape inside a pattern-constrained string (all strings here are)."""
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    assert complete(SCHEMA, text), text
    for pos, op, piece in edits:
        pos %= len(text) + 1
        text = text[:pos] + ("" if op == "del" else piece) + text[pos + (op != "ins"):]
    repeated: list[bool] = []
    try:
        parsed = json.loads(text, object_pairs_hook=lambda items: repeated.append(len({k for k, _ in items}) < len(items)) or dict(items))
        expected = valid(parsed, SCHEMA) and not any(repeated) and "\\u" not in text
    except ValueError:
        expected = False
    assert complete(SCHEMA, text) == expected, text


@pytest.mark.parametrize(("schema", "path", "words"), [
    ({"type": "string", "format": "hostname"}, "format", "unsupported format 'hostname'"),
    ({"type": "string", "pattern": "a(?=b)"}, "pattern", "cannot read the regular expression"),
    ({"type": "string", "pattern": "a^b"}, "pattern", "anchor '^' inside the pattern"),
    ({"type": "string", "pattern": "^a\nb$"}, "pattern", "no string meets"),
    ({"type": "string", "pattern": "^[a-z]{5}$", "maxLength": 4}, "pattern", "no string meets"),
    ({"type": "integer", "pattern": "1"}, "pattern", "needs type string"),
    ({"type": "string", "pattern": "a.{10}"}, "pattern", "more than 1000 states"),  # .*a.{10}.*: 2^10 subsets on the way
    ({"type": "string", "pattern": 3}, "pattern", "is a string"),
    ({"oneOf": [{"type": "string", "pattern": "^a"}, {"type": "string", "pattern": "b$"}]}, "oneOf.1", "may both match"),
])
def test_outside_the_subset_names_the_keyword(schema, path, words):
    with pytest.raises(SchemaError) as info:
        compile_schema({"type": "object", "properties": {"s": schema}})
    assert info.value.path == f"properties.s.{path}" and words in str(info.value), str(info.value)


def test_hyphens_in_classes_and_anchoring_a_costly_pattern():
    mail = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^[a-z0-9._%+-]+@[a-z-]+$"}}}
    assert complete(mail, '{"s":"a-b+c@x-y"}') and refused_at(mail, '{"s":"a*', '{"s":"a')
    anchored = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^a.{10}$"}}}  # cheap once anchored
    assert complete(anchored, '{"s":"a0123456789"}') and refused_at(anchored, '{"s":"a0123456789x', '{"s":"a0123456789')


def test_format_on_a_number_constrains_nothing_and_one_of_reads_patterns():
    assert complete({"type": "object", "properties": {"n": {"type": "integer", "format": "int64"}}}, '{"n":12}')
    one_of = {"type": "object", "properties": {"s": {"oneOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "uuid"}]}}}
    assert complete(one_of, '{"s":"2024-01-02"}') and accepts(one_of, '{"s":"2024-01-0x') is None


# -- a tiny random model's samples, several seeds ----------------------------------------------------------

SAMPLED = {"type": "object", "properties": {k: SCHEMA["properties"][k] for k in ("day", "clock", "id", "code", "greek")},
           "required": ["day", "clock", "id", "code", "greek"], "additionalProperties": False}


@pytest.fixture(scope="module")
def sampler(tiny_tokenizer):
    return Sampler(make_tiny_model(vocab_size=len(tiny_tokenizer), seed=3, max_position_embeddings=512), tiny_tokenizer)


def test_random_model_samples_validate(sampler, tiny_tokenizer):
    finished = len(sampled_documents(sampler, tiny_tokenizer, "When?", SAMPLED, n=4, max_new_tokens=200))
    assert finished >= 10, finished


# -- the server ---------------------------------------------------------------------------------------------

openai = pytest.importorskip("openai")

from served_tiny import openai_client, serve_tiny  # noqa: E402
from test_serve import assert_openai_error, post_raw  # noqa: E402
from test_serve_openai_params import MESSAGES  # noqa: E402

MAX_TOKENS = 80
SERVED = {"type": "object", "properties": {"day": {"type": "string", "format": "date"},
                                           "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{1,3}$"}},
          "required": ["day", "code"], "additionalProperties": False}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_tokenizer):
    with serve_tiny(tmp_path_factory.mktemp("served_patterns"), tiny_tokenizer, MAX_TOKENS) as served:
        yield served


def test_served_answers_validate_over_seeds(served):
    finished = len(served_documents(openai_client(served[0]), served[1].tokenizer, SERVED, "when", MESSAGES, MAX_TOKENS, seeds=3))
    assert finished >= 8, finished


def test_unsupported_format_is_a_400_naming_it(served):
    schema = {"type": "object", "properties": {"site": {"type": "string", "format": "uri"}}}
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4,
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": schema}}}
    status, raw = post_raw(served[0] + "/v1/chat/completions", json.dumps(body).encode())
    assert status == 400, raw
    error = assert_openai_error(raw)
    assert error["param"] == "response_format.json_schema.schema.properties.site.format", error
    assert "unsupported format 'uri'" in error["message"], error


def test_a_slow_pattern_does_not_stall_the_server(served):
    """The request's schema compiles in a thread: while a pattern that hits the 5 s build bound is being
    compiled (then refused), /health still answers."""
    import threading
    import time
    import urllib.request

    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(?:[a-z]{2,8}-){1,20}x$"}}}
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4,
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": schema}}}
    answer: list = []
    slow = threading.Thread(target=lambda: answer.append(post_raw(served[0] + "/v1/chat/completions", json.dumps(body).encode())))
    start = time.monotonic()
    slow.start()
    time.sleep(0.5)
    with urllib.request.urlopen(served[0] + "/health", timeout=30) as response:
        assert response.status == 200
    healthy_after = time.monotonic() - start
    slow.join()
    status, raw = answer[0]
    assert status == 400 and "to build" in raw["error"]["message"], raw
    assert healthy_after < time.monotonic() - start - 1, (healthy_after, time.monotonic() - start)
