"""The part of JSON Schema that constrained decoding can guarantee, compiled to a table of nodes.

`response_format: json_schema` and forced tool calls hand a schema to `compile_schema`; the JSON
automaton (json_prefix.py) then reads the node of every value it is inside, so the bytes it accepts
are exactly the prefixes of documents valid against the schema. The supported keywords:

- `type`: a name or a list of names among object, array, string, number, integer, boolean, null
  (no `type` = any JSON value; `properties` without `type` implies object).
- objects: `properties`, `required` (every name must be a property), `additionalProperties` false,
  true or a schema. Only declared properties are generated, each at most once, in any order; `}` is
  refused until every required one is there. An object without `properties` takes any keys, their
  values under `additionalProperties` (pydantic's `dict[str, X]`; false: `{}` only).
- arrays: `items` (one schema, or false), `prefixItems` (a schema per leading position: pydantic's
  tuples), `minItems`, `maxItems`, `uniqueItems` when the items are enum/const values (set[Enum]).
- strings: `minLength`, `maxLength`, in characters as a parser reads them (an escape is one, a
  surrogate pair's two escapes are one; inside such a string UTF-8 must be well formed, a lone
  surrogate escape is refused). A weak model's strings otherwise run until max_tokens.
- strings: `pattern` (unanchored unless ^...$, as JSON Schema reads it) and `format` (date, time,
  date-time, uuid, email, ipv4) as automata over characters with the length bounds in them
  (json_pattern.py, through greenery); a format on a node without strings constrains nothing.
- numbers: `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` (numbers, draft 6+), for
  integer and number (json_number_range.py: every prefix must still be finishable inside the range;
  a bounded number has no exponent).
- `anyOf`: any alternatives: the automaton follows every alternative a value's bytes still fit, as
  paths of their own (json_prefix.py), until the bytes tell them apart; at most MAX_LIVE paths at
  once. Pydantic's `Optional[X]` and `Union[A, B]` of models. Keywords beside it go into each alternative.
- `oneOf`: when its alternatives are exclusive by construction (json_one_of.py proves it from the
  keywords: kinds of value, enum/const values, bounds, a required discriminator property...); it then
  means what anyOf means. Otherwise it is refused naming the two alternatives: decoding cannot make a
  value match exactly one of two overlapping alternatives.
- `allOf`, and `$ref` with keywords beside it: merged into one schema (json_schema_merge.py) where
  the merge is well defined; a conflict (no common type, no common enum value, a required key the
  other side's additionalProperties false refuses) is refused naming it.
- `enum` and `const`: the value is one of the listed JSON values, written compactly (the values that
  break the node's other keywords, a too-long string say, are dropped).
- `$ref` to `#/$defs/NAME` or `#/definitions/NAME` (what pydantic emits for nested models), inlined;
  a recursive reference is refused (the node table is finite).
- annotations, ignored: title, description, default, examples, $schema, $id, $comment, deprecated,
  readOnly, writeOnly, discriminator (OpenAPI's, beside pydantic's oneOf; the const it names does the work).

Whitespace between tokens is narrowed to one optional space (`space`, `max_space`; Outlines' default
rule too): a model that never saw JSON otherwise fills max_tokens with newlines and indentation, which
the automaton would have to allow (measured on the demo SFT model: greedy json_schema output was
mostly whitespace and cut by max_tokens; with the rule it closes). `compile_schema(..., space=b" \t\n\r",
max_space=16)` accepts any JSON whitespace, as JSON mode does.

Anything else (not, if/then/else, uniqueItems of free items, patternProperties, propertyNames,
min/maxProperties, formats other than the six, ...) is refused with `SchemaError` naming the keyword
and where it is, so a client never gets output that silently ignores a constraint. The root must be
an object (OpenAI's rule; a bare number would have no end).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from chatforge.sampling.json_number_range import MAX_NUMBER, NumberRange, number_range, reachable
from chatforge.sampling.json_one_of import disjoint, kind_of, same
from chatforge.sampling.json_pattern import PatternError, string_pattern
from chatforge.sampling.json_schema_merge import MergeError, merge

TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
# discriminator: OpenAPI's (pydantic writes it beside a oneOf of models); the const it names does the work.
ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
                         "readOnly", "writeOnly", "discriminator"})
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "minLength",
                      "maxLength", "pattern", "format", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "prefixItems",
                      "uniqueItems",
                      *BOUNDS}) | ANNOTATIONS
SUPPORTED = ("type, properties, required, additionalProperties, items, prefixItems, uniqueItems, minItems, maxItems, minLength, maxLength, minimum, "
             "maximum, exclusiveMinimum, exclusiveMaximum, pattern, format, enum, const, anyOf, oneOf, allOf, $ref")
NUMERIC = frozenset({"number", "integer"})
MAX_NODES = 512  # a schema is part of a request: its size is bounded like the rest
# Paths the automaton may follow at once (json_prefix.JsonPrefix): anyOf alternatives nested in anyOf
# alternatives multiply, and every path costs a mask per token.
MAX_LIVE = 64


class SchemaError(ValueError):
    """A schema outside the supported subset; `path` is where (e.g. `properties.city.pattern`)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


@dataclass(frozen=True)
class SchemaNode:
    """One schema, as the automaton reads it. Child schemas are indices into `JsonSchema.nodes`."""

    types: frozenset[str] | None = None  # None = any JSON value
    properties: tuple[tuple[bytes, int], ...] | None = None  # (key as JSON bytes, node); None = any keys
    required: frozenset[bytes] = frozenset()  # keys as JSON bytes
    items: int | None = None  # node of every array item; None = any value
    min_items: int = 0
    max_items: int | None = None
    literals: tuple[bytes, ...] | None = None  # enum/const values as compact JSON bytes
    max_length: int | None = None  # of a string, in characters
    min_length: int = 0
    ranges: tuple[NumberRange, ...] | None = None  # a number's bounds (json_number_range.py); None = unbounded
    alternatives: tuple[int, ...] | None = None  # anyOf/oneOf: every alternative a value's bytes fit is followed
    closed: bool = False  # additionalProperties false: no key outside `properties` (oneOf's disjointness reads it)
    interval: tuple | None = None  # the bounds as numbers (low, strict, high, strict), for oneOf; None = none
    pattern: Any = None  # a string's pattern/format (json_pattern.StringPattern); None = any string
    values: int | None = None  # additionalProperties as a schema: the node of undeclared keys' values
    prefix: tuple[int, ...] = ()  # prefixItems: the nodes of the first items, in order (then `items`)
    unique: bool = False  # uniqueItems true: `items` is an enum/const node, each value used at most once

    @property
    def length_bounded(self) -> bool:
        return self.max_length is not None or self.min_length > 0

    def allows(self, kind: str) -> bool:
        return self.types is None or kind in self.types

    @property
    def integer_only(self) -> bool:
        return self.types is not None and "integer" in self.types and "number" not in self.types


ANY = 0  # the node index of "any JSON value" in every table


class JsonSchema:
    """The compiled node table; `root` is the document's node. Equal source schemas give equal `key`s.
    Whitespace outside strings: bytes of `space`, at most `max_space` in a row."""

    def __init__(self, nodes: list[SchemaNode], root: int, key: str, space: frozenset[int], max_space: int):
        self.nodes, self.root, self.key = nodes, root, key
        self.space, self.max_space = space, max_space

    def node(self, index: int) -> SchemaNode:
        return self.nodes[index]


MAX_CACHED_SCHEMAS = 64
_compiled: OrderedDict[str, JsonSchema] = OrderedDict()  # canonical JSON -> table, least recently used first
_compiled_lock = threading.Lock()  # the server compiles on its event loop and in its worker thread


def compile_schema(schema: Any, space: bytes | frozenset[int] = b" ", max_space: int = 1) -> JsonSchema:
    """The node table of `schema` (a dict), or `SchemaError` naming what is outside the subset.

    One request asks several times (the request check, SamplingConfig's validation, the sampler's
    constraint, each forced tool pass), so tables are cached by the schema's canonical JSON
    (`json.dumps(sort_keys=True)`, with the whitespace rule): each distinct schema compiles once, while
    it is among the last MAX_CACHED_SCHEMAS used. A table is never changed after it is built, so sharing
    it is safe. Schemas outside the subset are not cached (they raise again, the same error)."""
    if not isinstance(schema, dict):
        raise SchemaError("", f"a schema is a JSON object, got {type(schema).__name__}")
    try:
        key = json.dumps([schema, sorted(space), max_space], sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):  # not JSON (a Python caller's set, NaN...): compiled, not cached
        key = None
    if key is not None:
        with _compiled_lock:
            table = _compiled.get(key)
            if table is not None:
                _compiled.move_to_end(key)
                return table
    builder = _Builder(schema)
    root = builder.build(schema, "", ())
    if builder.nodes[root].types != frozenset({"object"}):
        raise SchemaError("type", "the root schema must be {\"type\": \"object\", ...}")
    live = _live_paths(builder.nodes, root, {})
    if live > MAX_LIVE:
        raise SchemaError("anyOf", f"the schema's anyOf/oneOf alternatives nest into {live} ways of reading one value "
                          f"(at most {MAX_LIVE} followed at once)")
    table = JsonSchema(builder.nodes, root, key if key is not None else repr(schema), frozenset(space), max_space)
    if key is not None:
        with _compiled_lock:
            _compiled[key] = table
            if len(_compiled) > MAX_CACHED_SCHEMAS:
                _compiled.popitem(last=False)
    return table


def encode(value: Any) -> bytes:
    """A JSON value's compact bytes: how an enum value or a key must be spelled by the model."""
    return json.dumps(value, separators=(",", ":")).encode()


class _Builder:
    def __init__(self, document: dict):
        self.document = document
        self.nodes: list[SchemaNode] = [SchemaNode()]  # ANY

    def add(self, node: SchemaNode) -> int:
        if len(self.nodes) >= MAX_NODES:
            raise SchemaError("", f"the schema has more than {MAX_NODES} sub-schemas")
        self.nodes.append(node)
        return len(self.nodes) - 1

    def build(self, schema: Any, path: str, refs: tuple[str, ...]) -> int:
        if schema is True or schema == {}:
            return ANY
        if not isinstance(schema, dict):
            raise SchemaError(path, f"a schema is a JSON object, got {json.dumps(schema)[:40]}")
        for keyword in schema:
            if keyword not in KEYWORDS:
                raise SchemaError(_join(path, keyword), f"unsupported keyword {keyword!r} (supported: {SUPPORTED})")
        if ("$defs" in schema or "definitions" in schema) and path:
            raise SchemaError(_join(path, "$defs"), "$defs are read at the root only")
        if "allOf" in schema or "$ref" in schema and set(schema) - ANNOTATIONS - {"$ref", "$defs", "definitions"}:
            merged, refs = self.flatten(schema, path, refs)  # allOf / $ref with keywords beside it: one schema
            return self.build(merged, path, refs)
        if "$ref" in schema:
            return self.ref(schema, path, refs)
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                return self.any_of(schema, path, refs, keyword)
        types = self.types(schema, path)
        properties, required = None, frozenset()
        if "properties" in schema or "required" in schema:
            if types is not None and "object" not in types:
                raise SchemaError(_join(path, "properties"), "properties and required need type object")
            types = types or frozenset({"object"})
            properties, required = self.object(schema, path, refs)
        extra = schema.get("additionalProperties", True)
        values = None
        if isinstance(extra, dict):  # undeclared keys' values (pydantic's dict[str, X]); with properties, none is generated
            values = self.build(extra, _join(path, "additionalProperties"), refs)
        elif not isinstance(extra, bool):
            raise SchemaError(_join(path, "additionalProperties"), f"additionalProperties is true, false or a schema, "
                              f"got {json.dumps(extra)[:40]}")
        if extra is False and properties is None and (types is None or "object" in types):
            properties = ()  # no property may be written: the only object is {}
        items, min_items, max_items, prefix, unique = None, 0, None, (), False
        if any(k in schema for k in ("items", "minItems", "maxItems", "prefixItems", "uniqueItems")):
            if types is not None and "array" not in types:
                raise SchemaError(_join(path, "items"), "items, prefixItems, minItems and maxItems need type array")
            if "prefixItems" in schema:  # pydantic's tuple[X, Y]: one schema per position
                raw = schema["prefixItems"]
                if not isinstance(raw, list):
                    raise SchemaError(_join(path, "prefixItems"), "prefixItems is a list of schemas")
                prefix = tuple(self.build(s, _join(path, f"prefixItems.{i}"), refs) for i, s in enumerate(raw))
            min_items = _count(schema.get("minItems", 0), _join(path, "minItems"))
            max_items = _count(schema["maxItems"], _join(path, "maxItems")) if "maxItems" in schema else None
            if schema.get("items") is False:  # no item after the prefix
                max_items = len(prefix) if max_items is None else min(max_items, len(prefix))
            elif "items" in schema:
                items = self.build(schema["items"], _join(path, "items"), refs)
            if max_items is not None and max_items < min_items:
                raise SchemaError(_join(path, "maxItems"), f"maxItems {max_items} < minItems {min_items}")
            unique = self.unique_items(schema, path, items, prefix)
            if unique:  # no more items than distinct values
                max_items = len(self.nodes[items].literals) if max_items is None else min(max_items, len(self.nodes[items].literals))
                if max_items < min_items:
                    raise SchemaError(_join(path, "minItems"), f"minItems {min_items} > the {max_items} distinct values uniqueItems allows")
        max_length, min_length = None, 0
        if "maxLength" in schema or "minLength" in schema:
            if types is not None and "string" not in types:
                raise SchemaError(_join(path, "maxLength" if "maxLength" in schema else "minLength"),
                                  "minLength and maxLength need type string")
            max_length = _count(schema["maxLength"], _join(path, "maxLength")) if "maxLength" in schema else None
            min_length = _count(schema.get("minLength", 0), _join(path, "minLength"))
            if max_length is not None and max_length < min_length:
                raise SchemaError(_join(path, "maxLength"), f"maxLength {max_length} < minLength {min_length}")
        pattern = self.pattern(schema, path, types, min_length, max_length)
        ranges = self.bounds(schema, path, types)
        node = SchemaNode(types, properties, required, items, min_items, max_items, None, max_length, min_length, ranges,
                          closed=extra is False, interval=_interval(schema) if ranges is not None else None, pattern=pattern,
                          values=values, prefix=prefix, unique=unique)
        return self.add(replace(node, literals=self.literals(schema, path, node)))  # enum values checked against the rest

    def unique_items(self, schema: dict, path: str, items: int | None, prefix: tuple[int, ...]) -> bool:
        """uniqueItems: supported when the items are enum/const values (pydantic's set[Enum] or
        set[Literal[...]]): which were written is a bit set, as an object's keys. Free items would need
        every item kept in the automaton's state."""
        flag = schema.get("uniqueItems", False)
        if not isinstance(flag, bool):
            raise SchemaError(_join(path, "uniqueItems"), f"uniqueItems is true or false, got {json.dumps(flag)[:40]}")
        if not flag:
            return False
        literals = self.nodes[items].literals if items is not None and not prefix else None
        if literals is None:
            raise SchemaError(_join(path, "uniqueItems"), "uniqueItems is supported when items are enum/const values "
                              "(set[Enum]); free items would have to be remembered whole")
        values = [json.loads(lit) for lit in literals]
        if any(same(a, b) for a, b in itertools.combinations(values, 2)):
            raise SchemaError(_join(path, "uniqueItems"), "uniqueItems with two equal enum values (1 and 1.0) is outside the subset")
        return True

    def pattern(self, schema: dict, path: str, types: frozenset[str] | None, min_length: int, max_length: int | None):
        """pattern and format (json_pattern.py): the string's automaton, with its length bounds in it. A
        format on a node that allows no string constrains nothing (OpenAPI's int64...), as the spec reads it."""
        strings = types is None or "string" in types
        if "pattern" in schema and not strings:
            raise SchemaError(_join(path, "pattern"), "pattern needs type string")
        # a tuple: several, from allOf's merge (json_schema_merge.py); JSON cannot spell one
        regexes, formats = (_strings(schema.get(k, ())) for k in ("pattern", "format"))
        formats = formats if strings else ()
        for keyword, values in (("pattern", regexes), ("format", formats)):
            if any(not isinstance(v, str) for v in values):
                raise SchemaError(_join(path, keyword), f"{keyword} is a string, got {json.dumps(schema[keyword], default=repr)[:40]}")
        if not regexes and not formats:
            return None
        try:
            return string_pattern(regexes, formats, min_length, max_length)
        except PatternError as exc:
            raise SchemaError(_join(path, "pattern" if regexes else "format"), str(exc)) from None

    def bounds(self, schema: dict, path: str, types: frozenset[str] | None) -> tuple[NumberRange, ...] | None:
        """minimum, maximum, exclusiveMinimum, exclusiveMaximum: the number's one range (None: none given)."""
        given = [k for k in BOUNDS if k in schema]
        if not given:
            return None
        if types is not None and not types & NUMERIC:
            raise SchemaError(_join(path, given[0]), f"{given[0]} needs type number or integer")
        for k in given:
            value = schema[k]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value or value in (float("inf"), float("-inf")):
                raise SchemaError(_join(path, k), f"{k} is a finite number, got {json.dumps(value)}")
        integer = types is not None and "number" not in types
        found = number_range(integer, *(schema.get(k) for k in BOUNDS))
        if not reachable("", (found,), MAX_NUMBER):
            raise SchemaError(_join(path, given[0]), f"no {'integer' if integer else 'number'} of at most {MAX_NUMBER} "
                              "characters satisfies " + ", ".join(f"{k} {json.dumps(schema[k])}" for k in given))
        return (found,)

    def any_of(self, schema: dict, path: str, refs: tuple[str, ...], keyword: str) -> int:
        """anyOf / oneOf: the automaton follows every alternative a value's bytes still fit (json_prefix.py),
        so alternatives may overlap. oneOf is compiled only when its alternatives are exclusive by
        construction (json_one_of.py: then it means what anyOf means); otherwise it is refused."""
        here = _join(path, keyword)
        options = schema[keyword]
        if not isinstance(options, list) or not options:
            raise SchemaError(here, f"{keyword} is a non-empty list of schemas")
        siblings = {k: v for k, v in schema.items() if k not in ANNOTATIONS and k not in (keyword, "$defs", "definitions")}
        if siblings:  # {"type": "object", "anyOf": [X, Y]} = anyOf of allOf [siblings, X], [siblings, Y]
            options = [{"allOf": [siblings, option]} for option in options]
        members: list[tuple[int, int]] = []  # (alternative's index, node)
        for i, option in enumerate(options):
            built = self.build(option, _join(here, str(i)), refs)
            if built == ANY and keyword == "anyOf":
                return ANY  # one alternative takes every value
            node = self.nodes[built]
            members += [(i, m) for m in node.alternatives] if node.alternatives is not None else [(i, built)]
        if keyword == "oneOf":
            for (i, a), (j, b) in itertools.combinations(members, 2):
                if i != j and not disjoint(self.nodes, a, b):
                    raise SchemaError(_join(here, str(j)), f"alternatives {i} and {j} may both match one value, and oneOf "
                                      "needs exactly one to match: make them exclusive (different types, a required "
                                      "property with different const values, bounds that do not meet) or use anyOf")
        kept = tuple(dict.fromkeys(m for _, m in members))
        if len(kept) == 1:
            return kept[0]
        types = frozenset().union(*(self.nodes[m].types or frozenset(TYPES) for m in kept))
        return self.add(SchemaNode(types=types, alternatives=kept))

    def types(self, schema: dict, path: str) -> frozenset[str] | None:
        if "type" not in schema:
            return None
        raw = schema["type"]
        names = [raw] if isinstance(raw, str) else raw
        if not isinstance(names, list) or not names or any(n not in TYPES for n in names):
            raise SchemaError(_join(path, "type"), f"unsupported type {json.dumps(raw)} (one of {', '.join(TYPES)}, or a list of them)")
        return frozenset(names)

    def literals(self, schema: dict, path: str, node: SchemaNode) -> tuple[bytes, ...] | None:
        """enum/const values that also meet the node's other keywords (type, lengths, bounds, item counts)."""
        if "enum" in schema and "const" in schema:
            raise SchemaError(_join(path, "const"), "give enum or const, not both")
        if "const" in schema:
            values, keyword = [schema["const"]], "const"
        elif "enum" in schema:
            values, keyword = schema["enum"], "enum"
            if not isinstance(values, list) or not values:
                raise SchemaError(_join(path, "enum"), "enum is a non-empty list of values")
        else:
            return None
        kept = [v for v in values if _fits(v, node)]
        if not kept:
            raise SchemaError(_join(path, keyword), f"no {keyword} value meets the schema's other keywords "
                              f"(type {sorted(node.types or TYPES)})")
        return tuple(dict.fromkeys(encode(v) for v in kept))

    def object(self, schema: dict, path: str, refs: tuple[str, ...]) -> tuple[tuple[tuple[bytes, int], ...], frozenset[bytes]]:
        props = schema.get("properties", {})
        if not isinstance(props, dict):
            raise SchemaError(_join(path, "properties"), "properties maps names to schemas")
        required = schema.get("required", [])
        if not isinstance(required, list) or any(not isinstance(r, str) for r in required):
            raise SchemaError(_join(path, "required"), "required is a list of property names")
        missing = [r for r in required if r not in props]
        if missing:
            raise SchemaError(_join(path, "required"), f"{missing[0]!r} is required but not among the properties")
        built = tuple((encode(name), self.build(sub, _join(path, f"properties.{name}"), refs)) for name, sub in props.items())
        return built, frozenset(encode(r) for r in required)

    def ref(self, schema: dict, path: str, refs: tuple[str, ...]) -> int:
        target, chain = self.resolve(schema["$ref"], path, refs)
        return self.build(target, _join(path, "$ref"), chain)

    def resolve(self, target: Any, path: str, refs: tuple[str, ...]) -> tuple[Any, tuple[str, ...]]:
        """The schema a local `$ref` names, and the chain of references followed to it."""
        for prefix in ("#/$defs/", "#/definitions/"):
            if isinstance(target, str) and target.startswith(prefix):
                table = self.document.get(prefix[2:-1], {})
                name = target[len(prefix):]
                if name not in table:
                    raise SchemaError(_join(path, "$ref"), f"{target!r} names no definition")
                if target in refs:
                    raise SchemaError(_join(path, "$ref"), f"{target!r} is recursive (outside the subset)")
                return table[name], (*refs, target)
        raise SchemaError(_join(path, "$ref"), f"only local references #/$defs/NAME are supported, got {json.dumps(target)}")

    def flatten(self, schema: dict, path: str, refs: tuple[str, ...]) -> tuple[Any, tuple[str, ...]]:
        """allOf, and $ref with keywords beside it (allOf of the two, as JSON Schema 2019+ reads it), as one
        schema (json_schema_merge.py), and the references followed on the way (a recursive one is refused)."""
        own = {k: v for k, v in schema.items() if k not in ANNOTATIONS and k not in ("$ref", "allOf", "$defs", "definitions")}
        parts = [(own, path, refs)]
        if "$ref" in schema:
            target, chain = self.resolve(schema["$ref"], path, refs)
            parts.append((target, _join(path, "$ref"), chain))
        if "allOf" in schema:
            options = schema["allOf"]
            if not isinstance(options, list) or not options:
                raise SchemaError(_join(path, "allOf"), "allOf is a non-empty list of schemas")
            parts += [(option, _join(path, f"allOf.{i}"), refs) for i, option in enumerate(options)]
        merged: Any = True
        followed = refs
        for part, where, chain in parts:
            if part is True or part == {}:
                continue
            if not isinstance(part, dict):
                raise SchemaError(where, f"a schema is a JSON object, got {json.dumps(part)[:40]} (false admits no value)")
            for keyword in part:
                if keyword not in KEYWORDS:
                    raise SchemaError(_join(where, keyword), f"unsupported keyword {keyword!r} (supported: {SUPPORTED})")
            if "allOf" in part or "$ref" in part:
                part, chain = self.flatten(part, where, chain)
            followed += tuple(r for r in chain if r not in followed)
            try:
                merged = part if merged is True else merge(merged, part)
            except MergeError as exc:
                raise SchemaError(_join(path, "allOf"), f"{exc} (at {exc.keyword})") from None
        return merged, followed


def _strings(value: Any) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _count(value: Any, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SchemaError(path, f"must be a non-negative integer, got {json.dumps(value)}")
    return value


def _interval(schema: dict) -> tuple:
    """The bounds as exact numbers: (low, low is strict, high, high is strict); None where unbounded."""
    lows = [(Fraction(schema[k]), k == "exclusiveMinimum") for k in ("minimum", "exclusiveMinimum") if k in schema]
    highs = [(Fraction(schema[k]), k == "exclusiveMaximum") for k in ("maximum", "exclusiveMaximum") if k in schema]
    low = max(lows, key=lambda b: (b[0], b[1]), default=(None, False))
    high = min(highs, key=lambda b: (b[0], not b[1]), default=(None, False))
    return (*low, *high)


def _live_paths(nodes: list[SchemaNode], index: int, memo: dict[int, int]) -> int:
    """The most paths the automaton follows at once inside a value of node `index`: an anyOf's
    alternatives add up, a container holds one value at a time."""
    if index not in memo:
        node = nodes[index]
        if node.alternatives is not None:
            found = sum(_live_paths(nodes, m, memo) for m in node.alternatives)
        else:
            inner = [v for _, v in node.properties or ()] + [i for i in (node.items, node.values, *node.prefix) if i is not None]
            found = max((_live_paths(nodes, v, memo) for v in inner), default=1)
        memo[index] = found
    return memo[index]


def _fits(value: Any, node: SchemaNode) -> bool:
    """Whether an enum/const value meets the node's own keywords (not its properties or items)."""
    kind = kind_of(value)
    if node.types is not None and kind not in node.types and not (kind == "integer" and "number" in node.types):
        return False
    if kind == "string" and (len(value) < node.min_length or node.max_length is not None and len(value) > node.max_length
                             or node.pattern is not None and not node.pattern.fullmatch(value)):
        return False
    if kind == "array" and (len(value) < node.min_items or node.max_items is not None and len(value) > node.max_items):
        return False
    if kind in NUMERIC and node.ranges is not None:
        return any(_in_range(value, r) for r in node.ranges)
    return True


def _in_range(value: int | float, r: NumberRange) -> bool:
    if isinstance(value, int):
        return (r.int_lo is None or value >= r.int_lo) and (r.int_hi is None or value <= r.int_hi)
    if r.integer:
        return False
    exact = Fraction(value)  # a double, read back as itself
    return (r.frac_lo is None or exact > r.frac_lo) and (r.frac_hi is None or exact < r.frac_hi)
