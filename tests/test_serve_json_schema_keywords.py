"""The json_schema keywords beyond the first subset: minimum/maximum (and exclusive), minLength, anyOf;
and UTF-8 under a length bound. The number bounds' reachability against brute-force enumeration, the
automaton by hand and against a validator written out here (`jsonschema` is not in requirements.lock),
a tiny random model's samples over several seeds, the server's answers and its 400s."""

from __future__ import annotations

import itertools
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatforge.sampling import Sampler
from chatforge.sampling.json_number_range import number_range, reachable
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
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "score": {"type": "number", "exclusiveMinimum": -1, "exclusiveMaximum": 1},
        "code": {"type": "string", "minLength": 2, "maxLength": 4},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 1, "maxItems": 3},
        "maybe": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "null"},
                            {"type": "string", "maxLength": 3}, {"const": True}]},
        "level": {"anyOf": [{"type": "integer", "maximum": -5}, {"type": "number", "minimum": 100, "maximum": 200}]},
        "short": {"enum": ["x", "long one", "yz"], "maxLength": 2},  # "long one" can never be written
    },
    "required": ["age", "code", "maybe"],
    "additionalProperties": False,
}


def refused_at(schema: dict, bad: str | bytes, ok_until: str | bytes) -> bool:
    """`ok_until` is accepted, and the rest of `bad` is refused."""
    bad, ok_until = (x if isinstance(x, bytes) else x.encode() for x in (bad, ok_until))
    state = accepts(schema, ok_until)
    return bad.startswith(ok_until) and state is not None and not state.feed_all(bad[len(ok_until):])


# -- number bounds: reachability against enumeration ---------------------------------------------------

_FULL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
_PREFIX = re.compile(r"-?|-?(0|[1-9][0-9]*)(\.[0-9]*)?")


@pytest.mark.parametrize(("bounds", "integer"), [
    ({"minimum": 0.1}, False), ({"minimum": 3, "maximum": 7}, True), ({"exclusiveMinimum": -1.5, "maximum": 0.25}, False),
    ({"minimum": 995, "maximum": 1004}, True), ({"minimum": 12.5, "exclusiveMaximum": 13}, False),
    ({"maximum": -20}, False), ({"exclusiveMaximum": 0}, True), ({"minimum": 0.01, "maximum": 0.015}, False),
    ({"exclusiveMinimum": 2.5, "exclusiveMaximum": 3.5}, True),
])
def test_reachable_is_exactly_some_number_within_the_budget_in_range(bounds, integer):
    """Every prefix of a JSON number up to 4 bytes: reachable (within 4 bytes) exactly when one of the
    enumerated numbers starting with it is valid, as Python's json reads it (ints exact, floats as doubles)."""
    budget = 4
    strings = [""] + ["".join(t) for n in range(1, budget + 1) for t in itertools.product("-0123456789.", repeat=n)]
    prefixes = [s for s in strings if _PREFIX.fullmatch(s)]
    good = [s for s in prefixes if _FULL.fullmatch(s) and valid(json.loads(s), {"type": "integer" if integer else "number", **bounds})]
    assert good  # every case has some
    found = number_range(integer, *(bounds.get(k) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")))
    starts = {s[:i] for s in good for i in range(len(s) + 1)}
    for prefix in prefixes:
        assert reachable(prefix, (found,), budget) == (prefix in starts), prefix
        if _FULL.fullmatch(prefix):
            assert reachable(prefix, (found,), len(prefix)) == (prefix in good), prefix


def test_decimals_are_read_as_doubles():
    # minimum 0.1: "0.1" reads as the double 0.1 (valid), though the decimal is below the double
    lo = number_range(False, minimum=0.1)
    assert reachable("0.1", (lo,), 3) and not reachable("0.09999999999999999", (lo,), 19)
    # exclusiveMaximum 1: 0.99999999999999999 reads as 1.0, not below 1; sixteen nines read below it
    hi = number_range(False, exclusive_maximum=1)
    assert json.loads("0.99999999999999999") == 1.0 and not reachable("0.99999999999999999", (hi,), 19)
    assert json.loads("0.9999999999999999") < 1 and reachable("0.9999999999999999", (hi,), 18)
    # an integer is read exactly: 2**53 + 1 is above a maximum of 2**53
    big = number_range(True, maximum=2**53)
    assert reachable(str(2**53), (big,), 16) and not reachable(str(2**53 + 1), (big,), 16)


# -- the automaton, by hand ---------------------------------------------------------------------------

def test_hand_cases():
    for good in ['{"age":18,"code":"ab","maybe":null}', '{"age":99,"code":"abcd","maybe":9,"score":-0.5}',
                 '{"age":50,"code":"\u00e9\U0001f600","maybe":"xyz","level":-5}', '{"age":50,"code":"a\\n","maybe":true,"level":150.25}',
                 '{"age":50,"code":"ab","maybe":0,"score":0,"tags":["c"],"short":"yz"}',
                 '{"age":50,"code":"ab","maybe":0,"level":99.99999999999999999}']:  # reads as the double 100.0
        assert complete(SCHEMA, good) and valid(json.loads(good), SCHEMA), good
    for bad, ok_until in [
        ('{"age":17', '{"age":1'),  # 17 < 18, and no digit after "17" can make it valid
        ('{"age":10', '{"age":1'), ('{"age":990', '{"age":99'), ('{"age":1,', '{"age":1'), ('{"age":0', '{"age":'),
        ('{"age":20.5', '{"age":20'),  # integer
        ('{"score":1', '{"score":'), ('{"score":-1', '{"score":-'), ('{"score":0.99999999999999999', '{"score":0.9999999999999999'), ('{"score":0.5e1', '{"score":0.5'),  # no exponent under bounds
        ('{"score":2', '{"score":'),
        ('{"code":"a"', '{"code":"a'), ('{"code":"abcde', '{"code":"abcd'),  # minLength 2, maxLength 4
        ('{"maybe":10', '{"maybe":1'), ('{"maybe":"abcd', '{"maybe":"abc'), ('{"maybe":false', '{"maybe":'),
        ('{"maybe":-1', '{"maybe":'), ('{"maybe":[', '{"maybe":'),
        ('{"level":-4,', '{"level":-4'), ('{"level":5', '{"level":'), ('{"level":200.1', '{"level":200'), ('{"level":250', '{"level":2'),
        ('{"short":"l', '{"short":"'),  # the enum value longer than maxLength is not offered
    ]:
        assert refused_at(SCHEMA, bad, ok_until), (bad, ok_until)


def test_length_bounds_count_characters_as_a_parser_reads_them():
    bounded = {"type": "object", "properties": {"s": {"type": "string", "maxLength": 1}}}
    # a stray continuation byte reads as U+FFFD: two of them would be two characters (the old maxLength took them)
    assert b'{"s":"\x80\x80"}'.decode(errors="replace") == '{"s":"\ufffd\ufffd"}'
    assert refused_at(bounded, b'{"s":"\x80', b'{"s":"')
    assert refused_at(bounded, b'{"s":"\xc3a', b'{"s":"\xc3')  # a lead byte without its continuation
    assert refused_at(bounded, b'{"s":"\xed\xa0\x80', b'{"s":"\xed')  # an encoded surrogate
    assert refused_at(bounded, b'{"s":"\xc0\xaf', b'{"s":"')  # an overlong form
    # surrogate escapes: a pair is one character (as json.loads reads it); a lone half is refused
    assert complete(bounded, '{"s":"\\ud83d\\ude00"}') and len(json.loads('"\\ud83d\\ude00"')) == 1
    assert refused_at(bounded, '{"s":"\\ud83d"}', '{"s":"\\ud83d')  # the low half must follow
    assert refused_at(bounded, '{"s":"\\ud83d\\u0041', '{"s":"\\ud83d\\u')
    assert refused_at(bounded, '{"s":"\\udc00', '{"s":"\\ud')  # a low half alone
    assert refused_at(bounded, '{"s":"\\ud83d\\ude00a', '{"s":"\\ud83d\\ude00')  # maxLength 1
    assert complete(bounded, '{"s":"\U0001f600"}') and complete(bounded, '{"s":"\\ud7ff"}') and complete(bounded, '{"s":"\\u00e9"}')
    # a string without a length bound keeps JSON mode's rule (any byte >= 0x20)
    assert complete({"type": "object", "properties": {"s": {"type": "string"}}}, b'{"s":"\x80"}')


@pytest.mark.parametrize(("schema", "path", "words"), [
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "^x+$", "maxLength": 0}}}, "properties.a.pattern", "no string meets"),
    ({"type": "object", "properties": {"a": {"oneOf": [{"type": "object"}, {"type": "object", "properties": {}}]}}},
     "properties.a.oneOf.1", "may both match"),
    ({"type": "object", "properties": {"a": {"oneOf": [{"enum": ["x"]}, {"type": "string"}]}}}, "properties.a.oneOf.1", "may both match"),
    ({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}], "maximum": 3}}}, "properties.a.anyOf.0.maximum",
     "needs type number"),  # keywords beside anyOf go into each alternative
    ({"type": "object", "properties": {"a": {"anyOf": []}}}, "properties.a.anyOf", "non-empty"),
    ({"type": "object", "properties": {"a": {"type": "integer", "minimum": 1.2, "maximum": 1.8}}}, "properties.a.minimum", "no integer"),
    ({"type": "object", "properties": {"a": {"type": "integer", "minimum": 10**40}}}, "properties.a.minimum", "at most 32"),
    ({"type": "object", "properties": {"a": {"type": "string", "maximum": 3}}}, "properties.a.maximum", "needs type number"),
    ({"type": "object", "properties": {"a": {"type": "number", "minimum": True}}}, "properties.a.minimum", "finite number"),
    ({"type": "object", "properties": {"a": {"type": "string", "minLength": 3, "maxLength": 2}}}, "properties.a.maxLength", "< minLength"),
    ({"type": "object", "properties": {"a": {"enum": ["abc"], "maxLength": 2}}}, "properties.a.enum", "no enum value"),
    ({"type": "object", "properties": {"a": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"not": {}}]}}}},
     "properties.a.items.anyOf.1.not", "unsupported keyword 'not'"),
])
def test_outside_the_subset_names_the_keyword_and_path(schema, path, words):
    with pytest.raises(SchemaError) as info:
        compile_schema(schema)
    assert info.value.path == path and words in str(info.value), str(info.value)


# -- the automaton against the validator: generated and mutated documents -------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=2, max_size=4)
_score = st.floats(-1, 1, exclude_min=True, exclude_max=True, allow_nan=False).filter(lambda x: "e" not in repr(x)) | st.just(0)
_doc = st.fixed_dictionaries(
    {"age": st.integers(18, 99), "code": _text,
     "maybe": st.none() | st.integers(0, 9) | st.just(True) | st.text(max_size=3)},
    optional={"score": _score, "tags": st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3),
              "level": st.integers(-10**9, -5) | st.integers(100, 200) | st.floats(100, 200).filter(lambda x: "e" not in repr(x)),
              "short": st.sampled_from(["x", "yz"])},
)


@settings(max_examples=200, deadline=None)
@given(_doc, st.sampled_from([None, 1]), st.booleans())
def test_every_valid_document_is_accepted(doc, indent, ascii_only):
    assert valid(doc, SCHEMA)
    assert complete(SCHEMA, json.dumps(doc, indent=indent, ensure_ascii=ascii_only), loose=True)


_ALPHABET = list('{}[]:,"-.0123456789eEtrufalsn\\') + ['"age"', '"score":', '"maybe":', '"level":', "12", '"c"', "\u00e9", "\\ud83d"]


@settings(max_examples=400, deadline=None)
@given(_doc, st.lists(st.tuples(st.integers(0, 300), st.sampled_from(["del", "ins", "rep"]), st.sampled_from(_ALPHABET)),
                      min_size=1, max_size=2))
def test_complete_exactly_when_valid(doc, edits):
    """Mutated documents: complete exactly when they parse, validate, repeat no key, write no number with
    an exponent (every number here is bounded: the automaton then writes plain decimals only) and hold no
    lone surrogate (refused in bounded strings, and not a key or enum value here)."""
    text = json.dumps(doc, separators=(",", ":"))
    for pos, op, piece in edits:
        pos %= len(text) + 1
        text = text[:pos] + ("" if op == "del" else piece) + text[pos + (op != "ins"):]
    floats: list[str] = []
    keys: list[list[str]] = []
    try:
        parsed = json.loads(text, parse_float=lambda s: floats.append(s) or float(s),
                            object_pairs_hook=lambda items: keys.append([k for k, _ in items]) or dict(items))
        expected = (valid(parsed, SCHEMA) and text == text.strip() and len(set(keys[-1])) == len(keys[-1])
                    and not any(c in s for s in floats for c in "eE")
                    and not any(0xD800 <= ord(c) <= 0xDFFF for c in json.dumps(parsed, ensure_ascii=False)))
    except ValueError:
        expected = False
    assert complete(SCHEMA, text, loose=True) == expected, text


# -- a tiny random model's samples, several seeds ----------------------------------------------------------

@pytest.fixture(scope="module")
def sampler(tiny_tokenizer):
    return Sampler(make_tiny_model(vocab_size=len(tiny_tokenizer), seed=5, max_position_embeddings=512), tiny_tokenizer)


def test_random_model_samples_validate(sampler, tiny_tokenizer):
    finished = len(sampled_documents(sampler, tiny_tokenizer, "Describe a person:", SCHEMA, n=6, max_new_tokens=160))
    assert finished >= 6, finished


# -- the server ---------------------------------------------------------------------------------------------

openai = pytest.importorskip("openai")

from served_tiny import openai_client, serve_tiny  # noqa: E402
from test_serve import assert_openai_error, post_raw  # noqa: E402
from test_serve_openai_params import MESSAGES  # noqa: E402

MAX_TOKENS = 85

# No free-running strings: this random model's strings run on (the sampler test above has room).
SERVED = {"type": "object", "properties": {
    "days": {"type": "integer", "minimum": 1, "maximum": 14},
    "temp": {"type": "number", "minimum": -40, "exclusiveMaximum": 50},
    "unit": {"anyOf": [{"enum": ["C", "F"]}, {"type": "null"}]},
    "code": {"type": "string", "minLength": 1, "maxLength": 2},
    "rain": {"anyOf": [{"type": "boolean"}, {"type": "integer", "minimum": 0, "maximum": 100}]}},
    "required": ["days", "temp", "unit", "code", "rain"], "additionalProperties": False}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_tokenizer):
    with serve_tiny(tmp_path_factory.mktemp("served_keywords"), tiny_tokenizer, MAX_TOKENS) as served:
        yield served


def test_served_answers_validate_over_seeds(served):
    finished = len(served_documents(openai_client(served[0]), served[1].tokenizer, SERVED, "forecast", MESSAGES, MAX_TOKENS,
                                    seeds=3))
    assert finished >= 4


@pytest.mark.parametrize(("schema", "param", "words"), [
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "^x$", "minLength": 2}}},
     "response_format.json_schema.schema.properties.a.pattern", "no string meets the pattern"),
    ({"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}, {"type": "string", "minLength": 1}]}}},
     "response_format.json_schema.schema.properties.a.oneOf.1", "may both match"),
    ({"type": "object", "properties": {"a": {"type": "integer", "minimum": 5, "maximum": 4}}},
     "response_format.json_schema.schema.properties.a.minimum", "no integer"),
])
def test_outside_the_subset_is_a_400_naming_the_path(served, schema, param, words):
    fmt = {"type": "json_schema", "json_schema": {"name": "w", "schema": schema}}
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, "response_format": fmt}
    status, raw = post_raw(served[0] + "/v1/chat/completions", json.dumps(body).encode())
    assert status == 400, raw
    error = assert_openai_error(raw)
    assert error["param"] == param and words in error["message"], error
