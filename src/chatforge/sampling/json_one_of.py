"""`oneOf`: when two compiled alternatives can never match the same JSON value.

JSON Schema's `oneOf` holds when exactly one alternative matches. Constrained decoding follows every
alternative a value's bytes still fit (json_prefix.py), so a finished value matches at least one; it
could match two, and a document valid against two alternatives breaks `oneOf`. Refusing that at the
last byte is not possible in general (every way to finish the prefix might match both), so `oneOf` is
compiled only when its alternatives are exclusive by construction, which `disjoint` proves from the
keywords (different kinds of value, enum/const values the other alternative refuses, number bounds or
length/count bounds that do not meet, a property required by both whose values are disjoint (a
discriminator), a closed object (additionalProperties false) without a key the other requires). Then
`oneOf` means what `anyOf` means and is decoded the same way. When no such proof is found the schema is
refused, naming the two alternatives: a disjointness this conservative check misses is a 400, never a
document that breaks `oneOf`.

`matches(value, node)` is JSON Schema's meaning of a compiled node for a concrete value (an enum/const
value tested against the other alternative), in schema terms: an object that declares properties but
not `additionalProperties: false` also takes other keys.
"""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

NUMERIC = frozenset({"number", "integer"})
KINDS = ("object", "array", "string", "numeric", "boolean", "null")


def disjoint(nodes: list, a: int, b: int) -> bool:
    """True only when no JSON value matches both node `a` and node `b` (False: maybe some does)."""
    first, second = nodes[a], nodes[b]
    if first.alternatives is not None:
        return all(disjoint(nodes, m, b) for m in first.alternatives)
    if second.alternatives is not None:
        return all(disjoint(nodes, a, m) for m in second.alternatives)
    if first.literals is not None:
        return not any(matches(nodes, json.loads(lit), b) for lit in first.literals)
    if second.literals is not None:
        return not any(matches(nodes, json.loads(lit), a) for lit in second.literals)
    shared = _kinds(first) & _kinds(second)
    return all(_kind_disjoint(nodes, first, second, kind) for kind in shared)


def _kinds(node) -> frozenset[str]:
    types = node.types if node.types is not None else frozenset(KINDS)
    return frozenset("numeric" if t in NUMERIC else t for t in types)


def _kind_disjoint(nodes: list, first, second, kind: str) -> bool:
    if kind == "numeric":
        return _apart(first.interval, second.interval)
    if kind == "string":
        if _counts_apart(first.min_length, first.max_length, second.min_length, second.max_length):
            return True
        return first.pattern is not None and second.pattern is not None and first.pattern.disjoint(second.pattern)
    if kind == "array":
        if _counts_apart(first.min_items, first.max_items, second.min_items, second.max_items):
            return True
        if first.prefix or second.prefix:  # position by position: the first item decides
            heads = [node.prefix[0] if node.prefix else node.items for node in (first, second)]
            return first.min_items > 0 and second.min_items > 0 and None not in heads and disjoint(nodes, *heads)
        return (first.min_items > 0 and second.min_items > 0 and first.items is not None and second.items is not None
                and disjoint(nodes, first.items, second.items))
    if kind == "object":
        if first.properties is None or second.properties is None:
            return False
        props_a, props_b = dict(first.properties), dict(second.properties)
        for key in first.required & second.required:  # a discriminator: required by both, values apart
            if key in props_a and key in props_b and disjoint(nodes, props_a[key], props_b[key]):
                return True
        return (first.closed and any(k not in props_a for k in second.required)
                or second.closed and any(k not in props_b for k in first.required))
    return False  # boolean, null: only enum/const values tell them apart (above)


def _counts_apart(lo_a: int, hi_a: int | None, lo_b: int, hi_b: int | None) -> bool:
    return hi_a is not None and hi_a < lo_b or hi_b is not None and hi_b < lo_a


def _apart(first, second) -> bool:
    """Whether two number intervals ((low, strict, high, strict), None = unbounded) share no number."""
    if first is None or second is None:
        return False
    return _below(first[2], first[3], second[0], second[1]) or _below(second[2], second[3], first[0], first[1])


def _below(high: Fraction | None, high_strict: bool, low: Fraction | None, low_strict: bool) -> bool:
    """Every number under `high` lies below every number over `low`."""
    if high is None or low is None:
        return False
    return high < low or high == low and (high_strict or low_strict)


def matches(nodes: list, value: Any, index: int) -> bool:
    """Whether `value` (parsed JSON) is valid against compiled node `index`, as JSON Schema reads it."""
    node = nodes[index]
    if node.alternatives is not None:
        return any(matches(nodes, value, m) for m in node.alternatives)
    if node.literals is not None:
        return any(same(value, json.loads(lit)) for lit in node.literals)
    kind = kind_of(value)
    if node.types is not None and not (kind in node.types or kind == "integer" and "number" in node.types
                                       or kind == "number" and "integer" in node.types and float(value).is_integer()):
        return False
    if kind == "string":
        return (node.min_length <= len(value) and (node.max_length is None or len(value) <= node.max_length)
                and (node.pattern is None or node.pattern.fullmatch(value)))
    if kind in NUMERIC:
        return in_interval(value, node.interval)
    if kind == "array":
        if node.unique and any(same(a, b) for i, a in enumerate(value) for b in value[i + 1:]):
            return False
        return (node.min_items <= len(value) and (node.max_items is None or len(value) <= node.max_items)
                and all(matches(nodes, v, node.prefix[i]) for i, v in enumerate(value[:len(node.prefix)]))
                and (node.items is None or all(matches(nodes, v, node.items) for v in value[len(node.prefix):])))
    if kind == "object" and node.properties is not None:
        props = dict(node.properties)
        keys = {json.dumps(k).encode(): v for k, v in value.items()}
        return (node.required.issubset(keys) and not (node.closed and any(k not in props for k in keys))
                and all(matches(nodes, v, props[k]) for k, v in keys.items() if k in props)
                and (node.values is None or all(matches(nodes, v, node.values) for k, v in keys.items() if k not in props)))
    if kind == "object" and node.values is not None:
        return all(matches(nodes, v, node.values) for v in value.values())
    return True


def in_interval(value: int | float, interval) -> bool:
    if interval is None:
        return True
    low, low_strict, high, high_strict = interval
    exact = Fraction(value)
    return ((low is None or exact > low or exact == low and not low_strict)
            and (high is None or exact < high or exact == high and not high_strict))


def same(a: Any, b: Any) -> bool:
    """JSON Schema's equality: numbers by value (1 == 1.0), otherwise type and value."""
    if kind_of(a) in NUMERIC and kind_of(b) in NUMERIC:
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def kind_of(value: Any) -> str:
    """The JSON Schema type of a parsed JSON value (bool before int: True is an int in Python)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"
