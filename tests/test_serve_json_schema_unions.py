"""anyOf / oneOf whose alternatives share first bytes: the automaton follows every alternative a value
still fits (a set of live paths) until the bytes tell them apart. By hand (each refusal at the exact
byte, the paths merging again after the value), against the validator in schema_validator.py on
generated and mutated documents, oneOf's exclusivity proofs, a tiny random model's samples over several
seeds, and the server through the openai client."""

from __future__ import annotations

import json

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from chatforge.sampling import Sampler
from chatforge.sampling.json_schema import MAX_LIVE, SchemaError, compile_schema
from schema_validator import (
    accepts,
    complete,
    integer_json_valid,
    mutated,
    sampled_documents,
    served_documents,
    valid,
)
from tiny_models import make_tiny_model

CAT = {"type": "object", "properties": {"pet": {"const": "cat"}, "lives": {"type": "integer", "minimum": 1, "maximum": 9}},
       "required": ["pet", "lives"], "additionalProperties": False}
DOG = {"type": "object", "properties": {"pet": {"const": "dog"}, "good": {"type": "boolean"}},
       "required": ["pet"], "additionalProperties": False}
SCHEMA = {
    "type": "object",
    "properties": {
        "animal": {"oneOf": [CAT, DOG]},  # a discriminated union: both objects, told apart by "pet"'s value
        "size": {"anyOf": [{"type": "integer", "minimum": 10, "maximum": 19}, {"type": "integer", "minimum": 100, "maximum": 199}]},
        "colour": {"anyOf": [{"enum": ["red", "green"]}, {"enum": ["grey", "blue"]}, {"type": "string", "maxLength": 2}]},
        "point": {"anyOf": [{"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"], "additionalProperties": False},
                            {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                             "required": ["x", "y"], "additionalProperties": False}]},
        "level": {"oneOf": [{"type": "integer", "maximum": 0}, {"type": "integer", "exclusiveMinimum": 0, "maximum": 50},
                            {"type": "string", "enum": ["high"]}]},
    },
    "required": ["animal", "size", "colour"],
    "additionalProperties": False,
}


def refused_at(schema: dict, bad: str, ok_until: str) -> bool:
    state = accepts(schema, ok_until)
    return bad.startswith(ok_until) and state is not None and not state.feed_all(bad[len(ok_until):].encode())


def test_hand_cases():
    for good in ['{"animal":{"pet":"cat","lives":9},"size":10,"colour":"red"}',
                 '{"animal":{"pet":"dog"},"size":199,"colour":"gr"}',  # "gr": the free string, not an enum's prefix
                 '{"animal":{"good":true,"pet":"dog"},"size":150,"colour":"grey","point":{"x":1}}',
                 '{"colour":"blue","size":11,"animal":{"lives":1,"pet":"cat"},"point":{"x":1,"y":-2},"level":-3}',
                 '{"animal":{"pet":"cat","lives":2},"size":12,"colour":"","level":50}',
                 '{"animal":{"pet":"cat","lives":2},"size":12,"colour":"g","level":"high"}']:
        assert complete(SCHEMA, good) and valid(json.loads(good), SCHEMA), good
    for bad, ok_until in [
        ('{"animal":{"pet":"cat"}', '{"animal":{"pet":"cat"'),  # a cat needs lives
        ('{"animal":{"pet":"cat","good"', '{"animal":{"pet":"cat","'),  # "good" is a dog's key
        ('{"animal":{"pet":"dog","lives"', '{"animal":{"pet":"dog","'),
        ('{"animal":{"lives":3,"pet":"d', '{"animal":{"lives":3,"pet":"'),  # lives: the cat's, so "cat" only
        ('{"animal":{"pet":"cow', '{"animal":{"pet":"c'),
        ('{"size":1,', '{"size":1'), ('{"size":2', '{"size":'), ('{"size":1999', '{"size":199'), ('{"size":1000', '{"size":100'),
        ('{"colour":"gree"', '{"colour":"gree'),  # "gree" is only a prefix of "green"; too long for the free string
        ('{"colour":"bla', '{"colour":"bl'),
        ('{"point":{"y":1}', '{"point":{"y":1'),  # y needs x
        ('{"point":{"x":1,"y":2,', '{"point":{"x":1,"y":2'),  # every key written
        ('{"level":51', '{"level":5'), ('{"level":"low', '{"level":"'),
    ]:
        assert refused_at(SCHEMA, bad, ok_until), (bad, ok_until)


def test_paths_fork_at_the_value_and_merge_after_it():
    state = accepts(SCHEMA, '{"point":')
    assert len(state.paths) == 1
    assert state.feed_all(b'{"x":1') and len(state.paths) == 2  # {"x"} or {"x", "y"}: not told apart yet
    assert state.feed(ord(",")) and len(state.paths) == 1  # only the second takes another key
    state = accepts(SCHEMA, '{"point":{"x":1')
    assert state.feed(ord("}")) and len(state.paths) == 1  # the first closes it: one path again after the value
    colour = accepts(SCHEMA, '{"colour":"gr')
    assert len(colour.paths) == 3  # "green", "grey" and a free string of at most 2
    assert colour.feed(ord('"')) and len(colour.paths) == 1


@pytest.mark.parametrize(("alternatives", "exclusive"), [
    ([{"type": "string"}, {"type": "integer"}], True),
    ([{"type": "integer"}, {"type": "number"}], False),  # 1 is both
    ([{"type": "integer", "maximum": 5}, {"type": "number", "minimum": 5}], False),  # 5 is both
    ([{"type": "integer", "maximum": 5}, {"type": "number", "exclusiveMinimum": 5}], True),
    ([{"type": "number", "exclusiveMaximum": 0.5}, {"type": "number", "minimum": 0.5}], True),
    ([{"enum": ["a", "b"]}, {"type": "string", "minLength": 2}], True),
    ([{"enum": ["a", "bb"]}, {"type": "string", "minLength": 2}], False),
    ([{"const": 1}, {"type": "number", "minimum": 0.5, "maximum": 1.5}], False),
    ([{"const": 1.0}, {"type": "integer"}], False),  # 1.0 is an integer to JSON Schema
    ([{"type": "string", "maxLength": 3}, {"type": "string", "minLength": 4}], True),
    ([{"type": "array", "maxItems": 1}, {"type": "array", "minItems": 2}], True),
    ([{"type": "array", "items": {"type": "string"}, "minItems": 1}, {"type": "array", "items": {"type": "integer"}, "minItems": 1}], True),
    ([{"type": "array", "items": {"type": "string"}}, {"type": "array", "items": {"type": "integer"}}], False),  # [] is both
    ([CAT, DOG], True),
    ([{"type": "object", "properties": {"a": {"type": "integer"}}}, {"type": "object", "properties": {"b": {"type": "integer"}}}], False),
    ([{"type": "object", "properties": {"a": {}}, "additionalProperties": False},
      {"type": "object", "properties": {"b": {}}, "required": ["b"]}], True),  # the first refuses the key the second needs
    ([{"type": "boolean"}, {"type": "null"}], True),
    ([{"type": "boolean"}, {"const": False}], False),
    ([{"anyOf": [{"type": "string"}, {"type": "null"}]}, {"type": "integer"}], True),
    ([{}, {"type": "null"}], False),
])
def test_one_of_is_compiled_exactly_when_its_alternatives_are_exclusive(alternatives, exclusive):
    schema = {"type": "object", "properties": {"v": {"oneOf": alternatives}}}
    if exclusive:
        compile_schema(schema)
    else:
        with pytest.raises(SchemaError) as info:
            compile_schema(schema)
        assert info.value.path == "properties.v.oneOf.1" and "alternatives 0 and 1 may both match" in str(info.value)


_POOL = [None, True, False, -3, -1, 0, 1, 2, 3, 5, 0.5, 1.0, 2.5, -0.5, "", "a", "b", "ab", "abc", "abcd", [], [1], ["a"],
         [1, "a"], {}, {"k": "a"}, {"k": "b"}, {"k": "a", "x": 1}, {"x": 1}, {"k": 1}]
_bounds = st.fixed_dictionaries({}, optional={k: st.integers(-3, 3) | st.sampled_from([0.5, 2.5]) for k in
                                              ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")})
_lengths = st.fixed_dictionaries({}, optional={"minLength": st.integers(0, 3), "maxLength": st.integers(1, 4)})
_leaf = (st.builds(lambda t, b: {"type": t, **b}, st.sampled_from(["integer", "number"]), _bounds)
         | st.builds(lambda b: {"type": "string", **b}, _lengths)
         | st.sampled_from([{"type": "boolean"}, {"type": "null"}, {"type": ["string", "null"]}])
         | st.lists(st.sampled_from([None, True, 0, 1, 1.0, 2.5, "a", "ab", "b"]), min_size=1, max_size=3, unique_by=repr).map(lambda v: {"enum": v}))
_object = st.builds(lambda k, extra, req: {"type": "object", "properties": {"k": {"const": k}, "x": {"type": "integer"}},
                                           "required": req, **({"additionalProperties": False} if not extra else {})},
                    st.sampled_from(["a", "b"]), st.booleans(), st.sampled_from([["k"], [], ["x"]]))
_array = st.builds(lambda items, lo: {"type": "array", "items": items, "minItems": lo}, _leaf, st.integers(0, 2))


@settings(max_examples=300, deadline=None)
@given(st.tuples(*[_leaf | _object | _array] * 2))
def test_one_of_is_compiled_only_when_no_value_matches_two(alternatives):
    """Soundness of the exclusivity proof: whenever a oneOf compiles, no value of a pool of 30 matches
    two of its alternatives (the validator, not the compiler, decides what matches)."""
    schema = {"type": "object", "properties": {"v": {"oneOf": list(alternatives)}}}
    try:
        compile_schema(schema)
    except SchemaError:  # refused: overlapping (or not proven apart), or an alternative no value meets
        event("refused")
        return
    event("compiled")
    for value in _POOL:
        assert sum(valid(value, a) for a in alternatives) <= 1, (value, alternatives)


def test_nesting_alternatives_past_the_bound_is_refused():
    level = {"anyOf": [{"type": "integer"}, {"type": "integer", "minimum": 0}]}
    for _ in range(6):  # 2 ** 7 = 128 ways of reading the innermost value
        level = {"anyOf": [{"type": "array", "items": level}, {"type": "array", "items": level, "minItems": 1}]}
    with pytest.raises(SchemaError) as info:
        compile_schema({"type": "object", "properties": {"v": level}})
    assert f"at most {MAX_LIVE}" in str(info.value) and "128" in str(info.value)


# -- against the validator: generated and mutated documents --------------------------------------------

_int = st.integers(-10**30, 10**30)  # numbers have at most 32 bytes (json_prefix.MAX_NUMBER)
_cat = st.fixed_dictionaries({"pet": st.just("cat"), "lives": st.integers(1, 9)})
_dog = st.fixed_dictionaries({"pet": st.just("dog")}, optional={"good": st.booleans()})
_doc = st.fixed_dictionaries(
    {"animal": _cat | _dog, "size": st.integers(10, 19) | st.integers(100, 199),
     "colour": st.sampled_from(["red", "green", "grey", "blue"]) | st.text(max_size=2)},
    optional={"point": st.fixed_dictionaries({"x": _int}, optional={"y": _int}),
              "level": st.integers(-10**6, 50) | st.just("high")})


@settings(max_examples=200, deadline=None)
@given(_doc, st.sampled_from([None, 1]))
def test_every_valid_document_is_accepted(doc, indent):
    assert valid(doc, SCHEMA)
    assert complete(SCHEMA, json.dumps(doc, indent=indent), loose=True)


_ALPHABET = list('{}[]:,"-0123456789') + ['"pet":', '"cat"', '"dog"', '"lives":', '"good":true', '"x":1', '"y":', '"gre', "\u00e9"]


@settings(max_examples=400, deadline=None)
@given(_doc, st.lists(st.tuples(st.integers(0, 200), st.sampled_from(["del", "ins", "rep"]), st.sampled_from(_ALPHABET)),
                      min_size=1, max_size=2))
def test_complete_exactly_when_valid(doc, edits):
    """Mutated documents: complete exactly when they parse, validate, repeat no key and write every number
    without "." or exponent (every number here is an integer: the automaton writes `1`, not `1.0`)."""
    text = mutated(doc, edits)
    expected = integer_json_valid(text, SCHEMA)
    assert complete(SCHEMA, text, loose=True) == expected, text


# -- a tiny random model's samples, several seeds ----------------------------------------------------------

@pytest.fixture(scope="module")
def sampler(tiny_tokenizer):
    return Sampler(make_tiny_model(vocab_size=len(tiny_tokenizer), seed=11, max_position_embeddings=512), tiny_tokenizer)


def test_random_model_samples_validate(sampler, tiny_tokenizer):
    documents = sampled_documents(sampler, tiny_tokenizer, "Describe a pet:", SCHEMA, n=6, max_new_tokens=120)
    animals = {doc["animal"]["pet"] for doc in documents}
    assert len(documents) >= 12 and animals == {"cat", "dog"}, (len(documents), animals)


# -- the server ---------------------------------------------------------------------------------------------

openai = pytest.importorskip("openai")

from served_tiny import openai_client, serve_tiny  # noqa: E402
from test_serve import assert_openai_error, post_raw  # noqa: E402
from test_serve_openai_params import MESSAGES  # noqa: E402

MAX_TOKENS = 60
SERVED = {"type": "object", "properties": {"animal": {"oneOf": [CAT, DOG]}, "size": SCHEMA["properties"]["size"]},
          "required": ["animal", "size"], "additionalProperties": False}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_tokenizer):
    with serve_tiny(tmp_path_factory.mktemp("served_unions"), tiny_tokenizer, MAX_TOKENS) as served:
        yield served


def test_served_answers_validate_over_seeds(served):
    finished = len(served_documents(openai_client(served[0]), served[1].tokenizer, SERVED, "pet", MESSAGES, MAX_TOKENS, seeds=3))
    assert finished >= 6, finished


def test_overlapping_one_of_is_a_400_naming_the_alternatives(served):
    schema = {"type": "object", "properties": {"a": {"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 0}]}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "w", "schema": schema}}
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, "response_format": fmt}
    status, raw = post_raw(served[0] + "/v1/chat/completions", json.dumps(body).encode())
    assert status == 400, raw
    error = assert_openai_error(raw)
    assert error["param"] == "response_format.json_schema.schema.properties.a.oneOf.1", error
    assert "alternatives 0 and 1 may both match" in error["message"], error
