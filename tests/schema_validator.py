"""JSON Schema's meaning of the keywords chatforge's `json_schema` supports, written out independently of
its compiler (`jsonschema` is not in requirements.lock), for the tests of constrained decoding."""

from __future__ import annotations

import operator

BOUNDS = (("minimum", operator.ge), ("maximum", operator.le), ("exclusiveMinimum", operator.gt),
          ("exclusiveMaximum", operator.lt))


def valid(value, schema: dict) -> bool:
    """True when `value` (parsed JSON) meets `schema`: anyOf, enum, const, type (a name or a list),
    properties with required and additionalProperties, string lengths, number bounds, array items and
    lengths."""
    if "anyOf" in schema and not any(valid(value, s) for s in schema["anyOf"]):
        return False
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        return False
    if "const" in schema and not _same(value, schema["const"]):
        return False
    types = schema.get("type")
    if types is not None and not any(_is(value, t) for t in ([types] if isinstance(types, str) else types)):
        return False
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        if any(r not in value for r in schema.get("required", [])):
            return False
        if schema.get("additionalProperties", True) is False and any(k not in props for k in value):
            return False
        if any(k in props and not valid(v, props[k]) for k, v in value.items()):
            return False
    if isinstance(value, str) and not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
        return False
    if _is(value, "number") and any(k in schema and not holds(value, schema[k]) for k, holds in BOUNDS):
        return False
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            return False
        if "items" in schema and not all(valid(v, schema["items"]) for v in value):
            return False
    return True


def _is(value, name: str) -> bool:
    return {
        "object": isinstance(value, dict), "array": isinstance(value, list), "string": isinstance(value, str),
        "null": value is None, "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
    }[name]


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b or (_is(a, "number") and _is(b, "number") and a == b)


ANY_SPACE = {"space": b" \t\n\r", "max_space": 16}  # JSON mode's whitespace rule, for pretty-printed documents


def accepts(schema: dict, text: str | bytes, loose: bool = False):
    """The automaton (`JsonPrefix`) after `text` under `schema`, or None where it refuses a byte."""
    from chatforge.sampling.json_prefix import JsonPrefix
    from chatforge.sampling.json_schema import compile_schema

    state = JsonPrefix(compile_schema(schema, **(ANY_SPACE if loose else {})))
    return state if state.feed_all(text if isinstance(text, bytes) else text.encode()) else None


def complete(schema: dict, text: str | bytes, loose: bool = False) -> bool:
    state = accepts(schema, text, loose)
    return state is not None and state.complete


def json_request(tokenizer, schema: dict, name: str) -> tuple[dict, dict]:
    """(response_format, logit_bias): the schema, strict, with whitespace tokens banned (so a random
    model's answers finish within a few dozen tokens)."""
    spaces = {str(i): -100 for i in range(len(tokenizer)) if not tokenizer.decode([i]).strip()}
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}, spaces


def served_json_choices(client, tokenizer, schema: dict, name: str, messages, max_tokens: int, seeds: int) -> list:
    """Choices of a served model answering under `json_request`, 4 per seed, at T = 1."""
    fmt, spaces = json_request(tokenizer, schema, name)
    return [choice for seed in range(seeds) for choice in client.chat.completions.create(
        model="tiny", messages=messages, temperature=1.0, seed=seed, n=4, max_tokens=max_tokens, response_format=fmt,
        logit_bias=spaces).choices]
