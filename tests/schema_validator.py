"""JSON Schema's meaning of the keywords chatforge's `json_schema` supports, written out independently of
its compiler (`jsonschema` is not in requirements.lock), for the tests of constrained decoding.
Formats are checked with the standard library's parsers (a date must be a real calendar day)."""

from __future__ import annotations

import datetime
import ipaddress
import operator
import re

BOUNDS = (("minimum", operator.ge), ("maximum", operator.le), ("exclusiveMinimum", operator.gt),
          ("exclusiveMaximum", operator.lt))


def valid(value, schema, root: dict | None = None) -> bool:
    """True when `value` (parsed JSON) meets `schema`: anyOf, oneOf (exactly one), allOf, $ref to
    `#/$defs/...` or `#/definitions/...` of `root` (the whole document; `schema` itself by default), enum,
    const, type (a name or a list), properties with required and additionalProperties (false or a
    schema), string lengths, pattern (`re.search`, as JSON Schema's regexes are unanchored), format
    (date, time, date-time, uuid, email, ipv4), number bounds, array items and lengths."""
    root = schema if root is None else root
    if isinstance(schema, bool):
        return schema
    if "$ref" in schema:
        table, _, name = schema["$ref"][2:].partition("/")
        if not valid(value, root[table][name], root):
            return False
    if "allOf" in schema and not all(valid(value, s, root) for s in schema["allOf"]):
        return False
    if "anyOf" in schema and not any(valid(value, s, root) for s in schema["anyOf"]):
        return False
    if "oneOf" in schema and sum(valid(value, s, root) for s in schema["oneOf"]) != 1:
        return False
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        return False
    if "const" in schema and not _same(value, schema["const"]):
        return False
    types = schema.get("type")
    if types is not None and not any(_is(value, t) for t in ([types] if isinstance(types, str) else types)):
        return False
    if isinstance(value, dict):
        props = schema.get("properties", {})
        if any(r not in value for r in schema.get("required", [])):
            return False
        extra = schema.get("additionalProperties", True)
        if any(not valid(v, props[k] if k in props else extra, root) for k, v in value.items()):
            return False
    if isinstance(value, str):
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
            return False
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            return False
        if "format" in schema and not _FORMATS[schema["format"]](value):
            return False
    if _is(value, "number") and any(k in schema and not holds(value, schema[k]) for k, holds in BOUNDS):
        return False
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            return False
        if schema.get("uniqueItems") and any(_same(a, b) for i, a in enumerate(value) for b in value[i + 1:]):
            return False
        prefix = schema.get("prefixItems", [])
        if not all(valid(v, s, root) for v, s in zip(value, prefix)):
            return False
        if "items" in schema and not all(valid(v, schema["items"], root) for v in value[len(prefix):]):
            return False
    return True


def _parses(read) -> object:
    def check(text: str) -> bool:
        try:
            read(text)
        except ValueError:
            return False
        return True
    return check


# RFC 3339 / 4122 / 5321 read by the standard library where it reads them: a date is a real calendar
# day (2023-02-29 is not), a time has an offset or Z.
_FORMATS = {
    "date": lambda s: re.fullmatch(r"\d{4}-\d\d-\d\d", s) is not None and _parses(datetime.date.fromisoformat)(s),
    "time": lambda s: re.fullmatch(r"\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", s) is not None
    and _parses(datetime.time.fromisoformat)(s.replace("Z", "+00:00")),
    "date-time": lambda s: re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", s) is not None
    and _parses(datetime.datetime.fromisoformat)(s.replace("Z", "+00:00")),
    "uuid": lambda s: re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", s) is not None,
    "ipv4": lambda s: re.fullmatch(r"[0-9.]+", s) is not None and _parses(ipaddress.IPv4Address)(s),
    "email": lambda s: re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", s) is not None,
}


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


def whitespace_tokens(tokenizer) -> list[int]:
    """Ids of the whitespace-only tokens: a random model banned from them (logit_bias -100) finishes its
    JSON within a few dozen tokens instead of spending them on spaces."""
    return [i for i in range(len(tokenizer)) if not tokenizer.decode([i]).strip()]


def json_request(tokenizer, schema: dict, name: str) -> tuple[dict, dict]:
    """(response_format, logit_bias): the schema, strict, with whitespace tokens banned."""
    spaces = {str(i): -100 for i in whitespace_tokens(tokenizer)}
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}, spaces


def served_json_choices(client, tokenizer, schema: dict, name: str, messages, max_tokens: int, seeds: int) -> list:
    """Choices of a served model answering under `json_request`, 4 per seed, at T = 1."""
    fmt, spaces = json_request(tokenizer, schema, name)
    return [choice for seed in range(seeds) for choice in client.chat.completions.create(
        model="tiny", messages=messages, temperature=1.0, seed=seed, n=4, max_tokens=max_tokens, response_format=fmt,
        logit_bias=spaces).choices]


def served_documents(client, tokenizer, schema: dict, name: str, messages, max_tokens: int, seeds: int) -> list:
    """The parsed answers of `served_json_choices` that finished; every answer, finished or cut by
    max_tokens, must be a prefix the schema's automaton accepts, and every finished one must validate."""
    import json

    documents = []
    for choice in served_json_choices(client, tokenizer, schema, name, messages, max_tokens, seeds):
        text = choice.message.content
        assert accepts(schema, text) is not None, text
        if choice.finish_reason == "stop":
            documents.append(json.loads(text))
            assert valid(documents[-1], schema), text
    return documents


def sampled_documents(sampler, tokenizer, prompt: str, schema: dict, n: int, max_new_tokens: int, seeds: int = 3,
                      ban_whitespace: bool = True) -> list:
    """`sampler`'s JSON-schema samples of `prompt` at T = 1, n per seed: the same checks and result as
    `served_documents`, for the sampler without the server."""
    import json

    from chatforge.sampling import SamplingConfig

    bias = {i: -100.0 for i in whitespace_tokens(tokenizer)} if ban_whitespace else {}
    documents = []
    for seed in range(seeds):
        cfg = SamplingConfig(temperature=1.0, seed=seed, n=n, max_new_tokens=max_new_tokens, response_format="json_schema",
                             json_schema=schema, stop_token_ids=[tokenizer.eos_token_id], logit_bias=bias)
        for sample in sampler.generate([tokenizer(prompt)["input_ids"]], cfg)[0]:
            assert accepts(schema, sample.text) is not None, sample.text  # cut by max_new_tokens: a prefix
            if sample.finish_reason == "stop":
                documents.append(json.loads(sample.text))
                assert valid(documents[-1], schema), sample.text
    return documents


def mutated(doc, edits, ensure_ascii: bool = True) -> str:
    """`doc` written compactly, then each (position, "del" | "ins" | "sub", piece) edit applied."""
    import json

    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=ensure_ascii)
    for pos, op, piece in edits:
        pos %= len(text) + 1
        text = text[:pos] + ("" if op == "del" else piece) + text[pos + (op != "ins"):]
    return text


def integer_json_valid(text: str, schema: dict) -> bool:
    """Whether `text` parses, validates against `schema`, repeats no key and writes every number
    without "." or exponent (what a complete answer of the automaton is, when all numbers are integers)."""
    import json

    repeated: list[bool] = []
    floats: list[str] = []
    try:
        parsed = json.loads(text, parse_float=lambda f: floats.append(f) or float(f),
                            object_pairs_hook=lambda items: repeated.append(len({k for k, _ in items}) < len(items)) or dict(items))
    except ValueError:
        return False
    return valid(parsed, schema) and not any(repeated) and not floats
