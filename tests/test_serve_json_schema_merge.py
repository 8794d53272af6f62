"""allOf (json_schema_merge.py), $ref beside other keywords, anyOf/oneOf beside other keywords,
additionalProperties false and as a schema, and a pydantic model end to end: its `model_json_schema()`
through the sampler over several seeds, and the openai client's `chat.completions.parse(response_format=
Model)` against the server (pydantic itself validates each answer)."""

from __future__ import annotations

import datetime
import enum
import json
from typing import Literal, Optional, Union

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from chatforge.sampling import Sampler
from chatforge.sampling.json_schema import SchemaError, compile_schema
from schema_validator import (
    accepts,
    complete,
    integer_json_valid,
    json_request,
    mutated,
    sampled_documents,
    valid,
)
from tiny_models import make_tiny_model

NAMED = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 4}}, "required": ["name"]}
SCHEMA = {
    "$defs": {"Named": NAMED, "Short": {"type": "string", "maxLength": 3}},
    "type": "object",
    "properties": {
        # allOf of two objects: both property sets, both required lists, the common key under both schemas
        "who": {"allOf": [{"$ref": "#/$defs/Named"},
                          {"properties": {"name": {"pattern": "^[a-z]+$"}, "age": {"type": "integer", "minimum": 0}},
                           "required": ["age"]}]},
        "n": {"allOf": [{"type": "number", "minimum": 0, "maximum": 50}, {"type": "integer", "maximum": 20, "exclusiveMinimum": 3}]},
        "pick": {"allOf": [{"enum": ["a", "b", "c", 1]}, {"enum": ["c", "b", 1.0, "z"]}, {"type": "string"}]},
        "short": {"$ref": "#/$defs/Short", "minLength": 2},  # $ref with keywords beside it (2019-09 and later)
        "closed": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False},
                             {"properties": {"a": {"maximum": 5}, "b": {"type": "string"}}}]},  # "b" refused by the first
        "tagged": {"type": "object", "required": ["k"], "anyOf": [  # keywords beside anyOf apply to every alternative
            {"properties": {"k": {"const": "x"}, "x": {"type": "boolean"}}, "additionalProperties": False},
            {"properties": {"k": {"const": "y"}}, "additionalProperties": False}]},
        "empty": {"type": "object", "additionalProperties": False},
        "counts": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 9}},
    },
    "required": ["who", "n"],
    "additionalProperties": False,
}


def refused_at(schema: dict, bad: str, ok_until: str) -> bool:
    state = accepts(schema, ok_until)
    return bad.startswith(ok_until) and state is not None and not state.feed_all(bad[len(ok_until):].encode())


def test_hand_cases():
    for good in ['{"who":{"name":"ab","age":0},"n":4}', '{"n":20,"who":{"age":7,"name":"abcd"},"pick":"c","short":"xy"}',
                 '{"who":{"name":"a","age":1},"n":5,"pick":"b","closed":{"a":5},"tagged":{"k":"x","x":true}}',
                 '{"who":{"name":"a","age":1},"n":5,"closed":{},"tagged":{"k":"y"},"empty":{},"counts":{"any key":3,"":0}}']:
        assert complete(SCHEMA, good) and valid(json.loads(good), SCHEMA), good
    for bad, ok_until in [
        ('{"who":{"name":"ab"}', '{"who":{"name":"ab"'),  # age required (the second schema)
        ('{"who":{"age":1}', '{"who":{"age":1'),  # name required (the first)
        ('{"who":{"name":"A', '{"who":{"name":"'), ('{"who":{"name":"abcde', '{"who":{"name":"abcd'),  # pattern and maxLength
        ('{"n":3', '{"n":'), ('{"n":21', '{"n":2'), ('{"n":4.', '{"n":4'),  # 3 < n <= 20, an integer
        ('{"pick":"a', '{"pick":"'), ('{"pick":"z', '{"pick":"'), ('{"pick":1', '{"pick":'),  # type string: 1 is dropped
        ('{"short":"x"', '{"short":"x'), ('{"short":"xyz1', '{"short":"xyz'),
        ('{"closed":{"b', '{"closed":{"'), ('{"closed":{"a":6', '{"closed":{"a":'),
        ('{"tagged":{}', '{"tagged":{'), ('{"tagged":{"k":"y",', '{"tagged":{"k":"y"'), ('{"tagged":{"k":"z', '{"tagged":{"k":"'),
        ('{"empty":{"', '{"empty":{'), ('{"counts":{"a":10', '{"counts":{"a":1'), ('{"counts":{"a":"', '{"counts":{"a":'),
    ]:
        assert refused_at(SCHEMA, bad, ok_until), (bad, ok_until)


@pytest.mark.parametrize(("schema", "path", "words"), [
    ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "properties.v.allOf", "no value is of type"),
    ({"allOf": [{"enum": [1, 2]}, {"const": 3}]}, "properties.v.allOf", "no enum/const value is in both"),
    ({"allOf": [{"type": "object", "properties": {"a": {}}, "additionalProperties": False}, {"required": ["b"]}]},
     "properties.v.allOf", "'b' is required by one schema and refused"),
    ({"allOf": []}, "properties.v.allOf", "non-empty list"),
    ({"allOf": [{"type": "string"}, {"not": {"const": "x"}}]}, "properties.v.allOf.1.not", "unsupported keyword 'not'"),
    ({"not": {"type": "null"}}, "properties.v.not", "unsupported keyword 'not'"),
    ({"allOf": [{"type": "string"}, False]}, "properties.v.allOf.1", "false admits no value"),
    ({"allOf": [{"type": "string", "maxLength": 2}, {"minLength": 3}]}, "properties.v.maxLength", "< minLength"),
    ({"$ref": "#/$defs/Missing", "maxLength": 2}, "properties.v.$ref", "names no definition"),
    ({"type": "object", "additionalProperties": 3}, "properties.v.additionalProperties", "true, false or a schema"),
])
def test_refusals_name_the_keyword(schema, path, words):
    with pytest.raises(SchemaError) as info:
        compile_schema({"type": "object", "properties": {"v": schema}})
    assert info.value.path == path and words in str(info.value), str(info.value)


def test_prefix_items_are_tuples():
    pair = {"type": "object", "properties": {"p": {"type": "array", "prefixItems": [{"type": "integer", "minimum": 0},
                                                                                  {"enum": ["a", "b"]}], "items": False}}}
    assert complete(pair, '{"p":[1,"a"]}') and complete(pair, '{"p":[1]}') and complete(pair, '{"p":[]}')
    for bad, ok_until in [('{"p":["a"', '{"p":['), ('{"p":[1,2', '{"p":[1,'), ('{"p":[1,"a",', '{"p":[1,"a"'), ('{"p":[-1', '{"p":[-')]:  # -0 is 0
        assert refused_at(pair, bad, ok_until), bad
    rest = {"type": "object", "properties": {"p": {"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "null"},
                                                   "minItems": 2}}}
    assert complete(rest, '{"p":["x",null,null]}') and refused_at(rest, '{"p":["x",1', '{"p":["x",') and refused_at(rest, '{"p":["x"]', '{"p":["x"')
    with pytest.raises(SchemaError, match="prefixItems on one side and items on the other"):
        compile_schema({"type": "object", "properties": {"p": {"allOf": [pair["properties"]["p"], {"items": {"type": "integer"}}]}}})


def test_unique_items_of_enum_values():
    sets = {"type": "object", "properties": {"s": {"type": "array", "items": {"enum": ["a", "b", 1, 12]}, "uniqueItems": True,
                                                   "minItems": 1}}}
    assert complete(sets, '{"s":["a","b",1,12]}') and complete(sets, '{"s":[12,1]}') and complete(sets, '{"s":[1]}')
    for bad, ok_until in [('{"s":["a","a', '{"s":["a","'), ('{"s":[1,"b",1]', '{"s":[1,"b",1'),  # 1 then only 12
                          ('{"s":["a","b",1,12,', '{"s":["a","b",1,12'), ('{"s":[]', '{"s":[')]:
        assert refused_at(sets, bad, ok_until), bad
    assert valid(["a", "b"], sets["properties"]["s"]) and not valid(["a", "a"], sets["properties"]["s"])
    for schema, words in [({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "enum/const values"),
                          ({"type": "array", "items": {"enum": [1, 1.0]}, "uniqueItems": True}, "two equal enum values"),
                          ({"type": "array", "items": {"enum": [1, 2]}, "uniqueItems": True, "minItems": 3}, "distinct values")]:
        with pytest.raises(SchemaError, match=words):
            compile_schema({"type": "object", "properties": {"s": schema}})
    assert complete({"type": "object", "properties": {"s": {"type": "array", "uniqueItems": False}}}, '{"s":[1,1]}')


def test_const_beside_an_enum_of_the_other_side():
    schema = {"type": "object", "properties": {"v": {"allOf": [{"const": "b"}, {"enum": ["a", "b"]}]}}}
    assert complete(schema, '{"v":"b"}') and accepts(schema, '{"v":"a') is None


def test_all_of_at_the_root_and_recursion_through_it():
    root = {"$defs": {"Base": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}},
            "allOf": [{"$ref": "#/$defs/Base"}, {"properties": {"tag": {"enum": ["t"]}}}]}
    assert complete(root, '{"id":1,"tag":"t"}') and accepts(root, '{"tag":"t"') is not None
    assert accepts(root, '{"tag":"t"}') is None  # id is required (Base)
    loop = {"$defs": {"T": {"type": "object", "properties": {"t": {"allOf": [{"$ref": "#/$defs/T"}]}}}}, "$ref": "#/$defs/T"}
    with pytest.raises(SchemaError, match="recursive"):
        compile_schema(loop)


_doc = st.fixed_dictionaries(
    {"who": st.fixed_dictionaries({"name": st.text("abz", min_size=1, max_size=4), "age": st.integers(0, 10**6)}),
     "n": st.integers(4, 20)},
    optional={"pick": st.sampled_from(["b", "c"]), "short": st.text("xy\u00e9", min_size=2, max_size=3),
              "closed": st.fixed_dictionaries({}, optional={"a": st.integers(-99, 5)}),
              "tagged": st.fixed_dictionaries({"k": st.just("x")}, optional={"x": st.booleans()}) | st.just({"k": "y"}),
              "empty": st.just({}), "counts": st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=3)})
_ALPHABET = list('{}":,-0123456789az') + ['"a":', '"b":', '"k":"y"', '"x":true', "\u00e9", '"name":"z"', ".5"]


@settings(max_examples=200, deadline=None)
@given(_doc)
def test_every_valid_document_is_accepted(doc):
    assert valid(doc, SCHEMA) and complete(SCHEMA, json.dumps(doc, ensure_ascii=False))


@settings(max_examples=400, deadline=None)
@given(_doc, st.lists(st.tuples(st.integers(0, 200), st.sampled_from(["del", "ins", "rep"]), st.sampled_from(_ALPHABET)),
                      min_size=1, max_size=2))
def test_complete_exactly_when_valid(doc, edits):
    """Mutated documents: complete exactly when they parse, validate, repeat no key and write every
    number without "." or exponent (every number here is integer or bounded)."""
    text = mutated(doc, edits, ensure_ascii=False)
    expected = integer_json_valid(text, SCHEMA)
    assert complete(SCHEMA, text) == expected, text


# -- a pydantic model, end to end ---------------------------------------------------------------------------

class Colour(str, enum.Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Address(BaseModel):
    city: str = Field(max_length=3)
    zip: str = Field(pattern=r"^\d{3}$")


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=1, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Owner(BaseModel):
    colour: Colour
    likes: set[Colour] = Field(max_length=2)
    score: tuple[int, Literal["A", "B"]]
    home: Address
    work: Optional[Address] = None
    pet: Union[Cat, Dog] = Field(discriminator="kind")
    born: datetime.date
    age: int = Field(ge=0, le=99)


def test_pydantic_schema_compiles_as_pydantic_writes_it():
    schema = Owner.model_json_schema()
    assert {"$defs", "$ref", "oneOf", "discriminator", "anyOf", "pattern", "format", "prefixItems", "uniqueItems"} <= set(_keywords(schema))
    doc = Owner(colour="red", likes={"blue"}, score=(3, "A"), home=Address(city="Rom", zip="001"), pet=Dog(kind="dog", good=True), born="2024-02-29", age=9)
    assert complete(schema, doc.model_dump_json())
    assert not complete(schema, doc.model_dump_json().replace("2024-02-29", "2023-02-29"))


def _keywords(schema):
    if isinstance(schema, dict):
        for key, value in schema.items():
            yield key
            if key not in ("properties", "$defs"):
                yield from _keywords(value)
            else:
                for sub in value.values():
                    yield from _keywords(sub)
    elif isinstance(schema, list):
        for item in schema:
            yield from _keywords(item)


@pytest.fixture(scope="module")
def sampler(tiny_tokenizer):
    return Sampler(make_tiny_model(vocab_size=len(tiny_tokenizer), seed=7, max_position_embeddings=512), tiny_tokenizer)


def test_random_model_fills_the_pydantic_schema(sampler, tiny_tokenizer):
    schema = Owner.model_json_schema()
    documents = sampled_documents(sampler, tiny_tokenizer, "An owner:", schema, n=4, max_new_tokens=200)
    for doc in documents:
        Owner.model_validate_json(json.dumps(doc))  # pydantic agrees, reading JSON as from the wire
    assert len(documents) >= 8, len(documents)


# -- the server, through the openai client's structured-output helper -----------------------------------------

openai = pytest.importorskip("openai")

from served_tiny import openai_client, serve_tiny  # noqa: E402
from test_serve_openai_params import MESSAGES  # noqa: E402

MAX_TOKENS = 400  # every answer must finish: parse() raises on one cut by the length


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_tokenizer):
    with serve_tiny(tmp_path_factory.mktemp("served_pydantic"), tiny_tokenizer, MAX_TOKENS, max_position_embeddings=512) as served:
        yield served


def test_openai_parse_with_a_pydantic_model(served):
    """`client.chat.completions.parse(response_format=Owner)`: the client sends Owner's strict schema
    (its own conversion: every field required, additionalProperties false) and parses each answer into
    an Owner; every finished answer must."""
    client = openai_client(served[0])
    _, spaces = json_request(served[1].tokenizer, {}, "owner")
    parsed = []
    for seed in range(3):
        completion = client.chat.completions.parse(model="tiny", messages=MESSAGES, response_format=Owner, temperature=1.0,
                                                   seed=seed, n=4, max_tokens=MAX_TOKENS, logit_bias=spaces)
        for choice in completion.choices:
            if choice.finish_reason == "stop":
                assert isinstance(choice.message.parsed, Owner), choice.message.content
                parsed.append(choice.message.parsed)
    assert len(parsed) >= 8, len(parsed)
    assert {type(owner.pet) for owner in parsed} == {Cat, Dog}
