"""`response_format: json_schema`: the schema subset (sampling/json_schema.py), the JSON automaton under
a schema against a small independent validator written here, the sampler's constrained decoding on a
tiny random model (every finished sample parses and validates), and the server's request shape and 400s."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatforge.sampling import Sampler, SamplingConfig
from chatforge.sampling.json_schema import SchemaError, compile_schema
from schema_validator import (
    ANY_SPACE,
    accepts,
    complete,
    json_request,
    sampled_documents,
    served_documents,
    valid,
)
from tiny_models import make_tiny_model

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "score": {"type": "number"},
        "ok": {"type": "boolean"},
        "kind": {"enum": ["cat", "dog", 12, 1]},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "minItems": 1, "maxItems": 2},
        "home": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": ["string", "null"]}},
                 "required": ["city"], "additionalProperties": False},
        "any": {},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}




# -- the automaton under a schema, by hand ----------------------------------------------------------

def test_hand_cases_accept_exactly_the_valid_documents():
    for good in ['{"name":"Al","age":3}', '{ "age" : -10 , "name" : "" }',
                 '{"age":0,"name":"x","tags":["a","b"],"home":{"city":"Y","zip":null},"ok":false,"score":-1.5e3}',
                 '{"kind":12,"name":"x","age":1}', '{"kind":1,"name":"x","age":1}', '{"kind":"dog","name":"x","age":1}',
                 '{"name":"x","age":1,"any":[1,{"q":null}]}']:
        assert complete(PERSON, good), good
        assert valid(json.loads(good), PERSON)
    # (document, the prefix the automaton must still accept): the next byte is refused
    for bad, ok_until in [
        ('{"name":"Al"}', '{"name":"Al"'),  # age is required: no "}" yet
        ('{"name":"x","age":1.5}', '{"name":"x","age":1'),  # integer: no fraction
        ('{"name":"x","age":1e3}', '{"name":"x","age":1'),  # nor an exponent
        ('{"nam":1}', '{"nam'),  # not a declared key
        ('{"name":"x","name":"y"}', '{"name":"x",'),  # a key once: "name" is refused ...
        ('{"name":"x","age":1,"tags":[]}', '{"name":"x","age":1,"tags":['),  # minItems 1
        ('{"name":"x","age":1,"tags":["a","b","a"]}', '{"name":"x","age":1,"tags":["a","b"'),  # maxItems 2
        ('{"name":"x","age":1,"tags":["c"]}', '{"name":"x","age":1,"tags":["'),  # enum
        ('{"name":"x","age":1,"ok":1}', '{"name":"x","age":1,"ok":'),  # boolean
        ('{"name":"x","age":1,"kind":2}', '{"name":"x","age":1,"kind":'),  # enum of numbers
        ('{"name":"x","age":1,"kind":123}', '{"name":"x","age":1,"kind":12'),
        ('{"name":"x","age":1,"home":{"zip":"1"}}', '{"name":"x","age":1,"home":{"zip":"1"'),  # city required
        ('{"name":1,"age":1}', '{"name":'),  # string
        ('["name"]', ''),  # the root is an object
    ]:
        assert bad.startswith(ok_until) and accepts(PERSON, ok_until) is not None, (bad, ok_until)
        state = accepts(PERSON, ok_until)
        assert not state.feed_all(bad[len(ok_until):].encode()), bad
        assert not valid_text(bad), bad
    # "name" is refused as a second key, but "age" is fine there
    assert accepts(PERSON, '{"name":"x","na') is None and accepts(PERSON, '{"name":"x","ag') is not None


def valid_text(text: str) -> bool:
    try:
        return valid(json.loads(text), PERSON)
    except ValueError:
        return False


def test_schema_mode_allows_one_space_between_tokens():
    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}}}}
    assert complete(schema, '{ "a" : [ 1 , 2 ] }') and complete(schema, '{"a":[1,2]}')
    for bad, ok_until in [('{"a":  [1]}', '{"a": '), ('{\n"a": [1]}', '{'), ('{"a":\t[1]}', '{"a":')]:
        state = accepts(schema, ok_until)
        assert state is not None and not state.feed_all(bad[len(ok_until):].encode()), bad
        assert complete(schema, bad, loose=True)  # JSON mode's rule takes them


def test_max_length_counts_characters():
    schema = {"type": "object", "properties": {"s": {"type": "string", "maxLength": 3}, "t": {"type": "string", "maxLength": 0}}}
    for good in ['{"s":"abc"}', '{"s":"\u00e9\u00e9\u00e9"}', '{"s":"a\\nb"}', '{"s":"\\u00e9x"}', '{"t":""}']:
        assert complete(schema, good) and len(json.loads(good).get("s", "")) <= 3, good
    for bad, ok_until in [('{"s":"abcd"}', '{"s":"abc'), ('{"s":"\u00e9\u00e9\u00e9\u00e9"}', '{"s":"\u00e9\u00e9\u00e9'),
                          ('{"s":"abc\\n"}', '{"s":"abc'), ('{"t":"a"}', '{"t":"')]:
        state = accepts(schema, ok_until)
        assert state is not None and not state.feed_all(bad[len(ok_until):].encode()), bad
    # a free object's keys have no length rule
    assert complete({"type": "object", "properties": {"o": {"type": "object"}}}, '{"o":{"a long key":1}}')


def test_enum_prefixes_and_unicode_keys():
    schema = {"type": "object", "properties": {"\u00e9t\u00e9": {"const": "x"}, "n": {"enum": [1, 12, 123]}}, "required": ["n"]}
    assert complete(schema, '{"n":1}') and complete(schema, '{"n":12}') and complete(schema, '{"n":123}')
    assert accepts(schema, '{"n":1234') is None
    # declared keys are spelled as json.dumps writes them (ASCII escapes), still the same key to a parser
    assert complete(schema, '{"\\u00e9t\\u00e9":"x","n":1}')
    assert json.loads('{"\\u00e9t\\u00e9":"x"}') == {"\u00e9t\u00e9": "x"}


def test_refs_are_inlined_and_max_items_zero():
    schema = {"$defs": {"Pt": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}},
              "type": "object", "properties": {"p": {"$ref": "#/$defs/Pt"}, "none": {"type": "array", "maxItems": 0}},
              "required": ["p"]}
    assert complete(schema, '{"p":{"x":-3},"none":[]}')
    assert accepts(schema, '{"p":{"x":-3},"none":[1') is None
    assert accepts(schema, '{"p":{}') is None


@pytest.mark.parametrize(("schema", "path", "words"), [
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "(?=x)"}}}, "properties.a.pattern", "cannot read"),
    ({"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 2}]}}},
     "properties.a.oneOf.1", "alternatives 0 and 1 may both match"),
    ({"type": "object", "additionalProperties": "no"}, "additionalProperties", "true, false or a schema"),
    ({"type": "object", "properties": {"a": {}}, "required": ["b"]}, "required", "'b' is required"),
    ({"type": "array"}, "type", "root schema must be"),
    ({"type": "object", "properties": {"a": {"type": "date"}}}, "properties.a.type", "unsupported type"),
    ({"type": "object", "properties": {"a": {"enum": []}}}, "properties.a.enum", "non-empty"),
    ({"type": "object", "properties": {"a": {"type": "integer", "enum": ["x"]}}}, "properties.a.enum", "no enum value"),
    ({"$defs": {"T": {"type": "object", "properties": {"t": {"$ref": "#/$defs/T"}}}}, "$ref": "#/$defs/T"},
     "$ref.properties.t.$ref", "recursive"),
    ({"type": "object", "properties": {"a": {"$ref": "http://x/y"}}}, "properties.a.$ref", "local references"),
])
def test_schemas_outside_the_subset_name_the_keyword(schema, path, words):
    with pytest.raises(SchemaError) as info:
        compile_schema(schema)
    assert info.value.path == path and words in str(info.value)


@pytest.fixture()
def builds(monkeypatch):
    """Counts the schema compilations (a `_Builder` each) from here on."""
    from chatforge.sampling import json_schema

    count = {"n": 0}

    class Counting(json_schema._Builder):
        def __init__(self, document):
            count["n"] += 1
            super().__init__(document)

    monkeypatch.setattr(json_schema, "_Builder", Counting)
    return count


def test_each_distinct_schema_compiles_once(builds):
    first = {"type": "object", "properties": {"k": {"enum": ["a", "b"]}}, "required": ["k"], "description": "cache 1"}
    table = compile_schema(first)
    same = json.loads(json.dumps(first, sort_keys=True))  # an equal schema, another dict, keys in another order
    assert compile_schema(same) is table and compile_schema(first) is table and builds["n"] == 1
    assert SamplingConfig(response_format="json_schema", json_schema=first).json_schema == first and builds["n"] == 1
    # a different schema (one enum value changed) gets its own table, which refuses what the first allowed
    other = json.loads(json.dumps(first).replace('"b"', '"c"'))
    assert accepts(other, '{"k":"c"}') is not None and accepts(other, '{"k":"b') is None and builds["n"] == 2
    assert accepts(first, '{"k":"b"}') is not None and accepts(first, '{"k":"c') is None and builds["n"] == 2
    # 1 and 1.0, true and 1 are different JSON: not one cache entry
    assert compile_schema({"type": "object", "properties": {"n": {"const": 1}}}) is not \
        compile_schema({"type": "object", "properties": {"n": {"const": 1.0}}})
    # the whitespace rule is part of the key
    assert compile_schema(first, **ANY_SPACE) is not table and builds["n"] == 5
    # a schema outside the subset is not cached: it raises each time
    bad = {"type": "object", "properties": {"a": {"format": "hostname"}}}
    for _ in range(2):
        with pytest.raises(SchemaError):
            compile_schema(bad)
    assert builds["n"] == 7


def test_the_cache_is_bounded(builds):
    from chatforge.sampling.json_schema import MAX_CACHED_SCHEMAS

    schemas = [{"type": "object", "description": f"bounded {i}"} for i in range(MAX_CACHED_SCHEMAS + 1)]
    tables = [compile_schema(s) for s in schemas]
    assert builds["n"] == MAX_CACHED_SCHEMAS + 1
    assert compile_schema(schemas[-1]) is tables[-1] and builds["n"] == MAX_CACHED_SCHEMAS + 1
    assert compile_schema(schemas[0]) is not tables[0] and builds["n"] == MAX_CACHED_SCHEMAS + 2  # the oldest went


# -- the automaton against the validator on generated documents -----------------------------------------

_name = st.text(max_size=4)
_tag = st.sampled_from(["a", "b"])
_person = st.fixed_dictionaries(
    {"name": _name, "age": st.integers(-10**6, 10**6)},
    optional={"score": st.floats(allow_nan=False, allow_infinity=False, width=32) | st.integers(-99, 99),
              "ok": st.booleans(), "kind": st.sampled_from(["cat", "dog", 12, 1]),
              "tags": st.lists(_tag, min_size=1, max_size=2),
              "home": st.fixed_dictionaries({"city": _name}, optional={"zip": st.none() | _name}),
              "any": st.none() | st.lists(st.integers(-10**12, 10**12), max_size=2)},  # numbers: 32 bytes at most
)


@settings(max_examples=200, deadline=None)
@given(_person, st.sampled_from([None, 1]), st.booleans())
def test_every_valid_document_is_accepted_whole(doc, indent, ascii_only):
    text = json.dumps(doc, indent=indent, ensure_ascii=ascii_only)
    assert valid(doc, PERSON)
    assert complete(PERSON, text, loose=True), text
    assert complete(PERSON, json.dumps(doc, ensure_ascii=ascii_only)), text  # one space after ":" and ","


_ALPHABET = list('{}[]:,"-.0123456789eEtrufalsn') + ['"age"', '"tags"', '"kind":', "12", '"c"', '"x",']


@settings(max_examples=400, deadline=None)
@given(_person, st.lists(st.tuples(st.integers(0, 300), st.sampled_from(["del", "ins", "rep"]), st.sampled_from(_ALPHABET)),
                         min_size=1, max_size=2))
def test_complete_exactly_when_the_document_parses_and_validates(doc, edits):
    text = json.dumps(doc, separators=(",", ":"))
    for pos, op, piece in edits:
        pos %= len(text) + 1
        text = text[:pos] + ("" if op == "del" else piece) + text[pos + (op != "ins"):]
    try:
        parsed = json.loads(text)
        expected = valid(parsed, PERSON) and text == text.strip() and len(set(_keys(text))) == len(_keys(text))
    except ValueError:
        expected = False
    assert complete(PERSON, text, loose=True) == expected, text


def _keys(text: str) -> list[str]:
    """The top-level object's keys in order, duplicates kept (json.loads keeps only the last)."""
    pairs: list = []
    json.loads(text, object_pairs_hook=lambda items: pairs.append([k for k, _ in items]) or dict(items))
    return pairs[-1] if pairs else []


# -- the sampler on a tiny random model ------------------------------------------------------------------

@pytest.fixture(scope="module")
def sampler(tiny_tokenizer):
    return Sampler(make_tiny_model(vocab_size=len(tiny_tokenizer), seed=5, max_position_embeddings=512), tiny_tokenizer)


def test_random_model_outputs_validate_against_the_schema(sampler, tiny_tokenizer):
    # with whitespace-only tokens banned (a space may still start a token), several samples close their
    # object within max_new_tokens; without, every sample must still be a valid prefix
    for ban_whitespace, least in ((False, 0), (True, 3)):
        finished = len(sampled_documents(sampler, tiny_tokenizer, "Describe a person:", PERSON, n=8, max_new_tokens=160,
                                         seeds=1, ban_whitespace=ban_whitespace))
        assert finished >= least, finished


# -- the server: OpenAI's request shape, the constrained answers, the 400s ---------------------------------

openai = pytest.importorskip("openai")

from served_tiny import openai_client, serve_tiny  # noqa: E402
from test_serve import assert_openai_error, post_raw  # noqa: E402
from test_serve_openai_params import MESSAGES  # noqa: E402

MAX_TOKENS = 85  # this random model spells most keys a byte per token (context: 128 positions)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_tokenizer):
    """A tiny random chat model served on a free port: (url, Server)."""
    with serve_tiny(tmp_path_factory.mktemp("served"), tiny_tokenizer, MAX_TOKENS) as served:
        yield served


@pytest.fixture(scope="module")
def client(served):
    return openai_client(served[0])


# No free-text string: this random model's strings run on for hundreds of tokens (the sampler test
# above has them, with room to finish).
WEATHER = {"type": "object", "properties": {"city": {"enum": ["Oslo", "Lima"]}, "days": {"type": "integer"},
                                            "unit": {"enum": ["C", "F"]}, "windy": {"type": "boolean"},
                                            "hours": {"type": "array", "items": {"type": "integer"}, "maxItems": 2}},
           "required": ["city", "days", "unit", "windy"], "additionalProperties": False}


def test_served_answers_validate_against_the_schema(client, served):
    answers = served_documents(client, served[1].tokenizer, WEATHER, "weather", MESSAGES, MAX_TOKENS, seeds=2)
    assert all({"city", "days", "unit", "windy"} <= set(answer) for answer in answers), answers
    assert len(answers) >= 2
    fmt, spaces = json_request(served[1].tokenizer, WEATHER, "weather")
    # streamed: the same text as the non-streamed answer for the same seed
    streamed = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=1.0, seed=0, max_tokens=MAX_TOKENS,
                                              response_format=fmt, logit_bias=spaces, stream=True)
    whole = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=1.0, seed=0, max_tokens=MAX_TOKENS,
                                           response_format=fmt, logit_bias=spaces)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == whole.choices[0].message.content
    # /v1/completions takes the same response_format (an extension, as vLLM's)
    text = client.completions.create(model="tiny", prompt="Weather:", temperature=0, max_tokens=MAX_TOKENS,
                                     extra_body={"response_format": fmt, "logit_bias": spaces})
    assert accepts(WEATHER, text.choices[0].text) is not None


@pytest.mark.parametrize(("fmt", "param", "words"), [
    ({"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object", "properties": {"a": {"type": "string", "format": "uri"}}}}},
     "response_format.json_schema.schema.properties.a.format", "unsupported format 'uri'"),
    ({"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object", "not": {"required": ["a"]}}}},
     "response_format.json_schema.schema.not", "unsupported keyword 'not'"),
    ({"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "string"}}},
     "response_format.json_schema.schema.type", "root schema must be"),
    ({"type": "json_schema", "json_schema": {"name": "bad name!", "schema": WEATHER}}, "response_format.json_schema.name", "pattern"),
    ({"type": "json_schema"}, "response_format.json_schema", "needs json_schema"),
    ({"type": "json_object", "json_schema": {"name": "w", "schema": WEATHER}}, "response_format.json_schema", "only with type json_schema"),
    ({"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER, "strict": "yes"}}, "response_format.json_schema.strict", "boolean"),
])
def test_bad_schemas_are_400s_naming_the_keyword(served, fmt, param, words):
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, "response_format": fmt}
    status, raw = post_raw(served[0] + "/v1/chat/completions", json.dumps(body).encode())
    assert status == 400, raw
    error = assert_openai_error(raw)
    assert error["param"] == param and words in error["message"] and "response_format" in error["message"], error


def test_a_request_compiles_its_schema_once(served, builds):
    """The request check, SamplingConfig's validation, the sampler's constraint: one compilation."""
    schema = {"type": "object", "properties": {"u": {"enum": ["C", "F"]}}, "required": ["u"],
              "additionalProperties": False, "description": "compiled once"}
    fmt = {"type": "json_schema", "json_schema": {"name": "once", "schema": schema}}
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 12, "temperature": 0, "response_format": fmt}
    for _ in range(2):
        status, reply = post_raw(served[0] + "/v1/chat/completions", json.dumps(body).encode())
        assert status == 200 and accepts(schema, reply["choices"][0]["message"]["content"]) is not None, reply
    assert builds["n"] == 1
