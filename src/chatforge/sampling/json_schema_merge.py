"""`allOf` (and `$ref` with keywords beside it): two schemas merged into one that means both.

json_schema.py compiles one schema per value, so `allOf: [A, B]` is rewritten as the single schema
valid exactly where A and B both are, keyword by keyword:

- type: the common types (integer is the number that is whole); none in common is an error.
- properties: every key of either; a key in both gets `allOf` of its two schemas. A side with
  `additionalProperties: false` admits no key outside its own properties (such a key of the other
  side is dropped, and an error if the other requires it); a side with `additionalProperties` as a
  schema puts that schema on the other side's extra keys. required: the union.
- items: `allOf` of both (prefixItems: only when equal on both sides, else an error). Lower bounds (minimum, exclusiveMinimum, minItems, minLength): the larger;
  upper bounds: the smaller. enum/const: the values in both (JSON equality, 1 == 1.0); none is an error.
- pattern, format: both kept (a tuple, which JSON cannot spell; json_pattern intersects the automata).
- anyOf/oneOf on a side: distributed, `allOf: [A, anyOf: [X, Y]]` = `anyOf: [allOf: [A, X], allOf:
  [A, Y]]` (and the same for oneOf, whose exclusivity is then checked on the merged alternatives).
- anything else equal on both sides is kept; different values of a keyword without a merge rule are
  an error naming it (`MergeError`), never a silent choice of one side.
"""

from __future__ import annotations

import json
from typing import Any

from chatforge.sampling.json_one_of import same

LOWER = ("minimum", "exclusiveMinimum", "minItems", "minLength")
UPPER = ("maximum", "exclusiveMaximum", "maxItems", "maxLength")
UNIONS = ("anyOf", "oneOf")


class MergeError(ValueError):
    """Two schemas of an allOf that cannot be merged, or whose merge no value meets; `keyword` is where."""

    def __init__(self, keyword: str, message: str):
        super().__init__(message)
        self.keyword = keyword


def merge(first: dict, second: dict) -> dict:
    """One schema meaning `first` and `second` both (neither has $ref or allOf at its top level)."""
    for side, other in ((first, second), (second, first)):
        for union in UNIONS:
            if union in side:
                rest = {k: v for k, v in side.items() if k != union}
                if not isinstance(side[union], list):
                    return side  # json_schema.py reports the malformed keyword
                return {union: [{"allOf": [rest, alternative, other]} for alternative in side[union]]}
    for side, other in ((first, second), (second, first)):
        if "prefixItems" in side and "prefixItems" not in other and "items" in other:
            raise MergeError("prefixItems", "allOf: prefixItems on one side and items on the other has no merge rule")
    merged: dict[str, Any] = {}
    for key in first.keys() | second.keys():
        if key not in second or key not in first:
            merged[key] = first[key] if key in first else second[key]
        elif key in LOWER or key in UPPER:
            merged[key] = _tighter(key, first[key], second[key])
        elif key == "type":
            merged[key] = _types(first[key], second[key])
        elif key in ("enum", "const"):
            continue  # below, together
        elif key == "uniqueItems":
            merged[key] = first[key] is True or second[key] is True
        elif key == "required":
            merged[key] = list(dict.fromkeys([*_names(first[key]), *_names(second[key])]))
        elif key == "items" and "prefixItems" not in first and "prefixItems" not in second:
            merged[key] = {"allOf": [first[key], second[key]]}
        elif key in ("pattern", "format"):
            merged[key] = tuple(dict.fromkeys([*_tuple(first[key]), *_tuple(second[key])]))
        elif key in ("properties", "additionalProperties"):
            continue  # below, together
        elif _canonical(first[key]) != _canonical(second[key]):
            raise MergeError(key, f"allOf: {key} differs between the schemas ({_short(first[key])} and "
                             f"{_short(second[key])}) and has no merge rule")
        else:
            merged[key] = first[key]
    _merge_values(first, second, merged)
    _merge_objects(first, second, merged)
    return merged


def _merge_values(first: dict, second: dict, merged: dict) -> None:
    """enum and const of both sides: the values every side lists."""
    lists = [_values(side) for side in (first, second) if "enum" in side or "const" in side]
    if not lists:
        return
    if len(lists) == 1:
        merged.update({k: side[k] for side in (first, second) for k in ("enum", "const") if k in side})
        return
    common = [v for v in lists[0] if any(same(v, w) for w in lists[1])]
    if not common:
        raise MergeError("enum", "allOf: no enum/const value is in both schemas")
    merged.pop("const", None)
    merged["enum"] = common


def _merge_objects(first: dict, second: dict, merged: dict) -> None:
    if not any(k in side for side in (first, second) for k in ("properties", "additionalProperties")):
        return
    props = {}
    sides = [(side.get("properties", {}), side.get("additionalProperties", True)) for side in (first, second)]
    if any(not isinstance(p, dict) for p, _ in sides):
        merged["properties"] = next(p for p, _ in sides if not isinstance(p, dict))  # reported by json_schema.py
        return
    for name in dict.fromkeys([*sides[0][0], *sides[1][0]]):
        schemas = []
        for own, extra in sides:
            schemas.append(own[name] if name in own else extra)
        if any(s is False for s in schemas):
            if name in merged.get("required", []):
                raise MergeError("additionalProperties", f"allOf: {name!r} is required by one schema and refused "
                                 "by the other's additionalProperties false")
            continue
        kept = [s for s in schemas if s is not True]
        props[name] = kept[0] if len(kept) == 1 else {"allOf": kept} if kept else True
    for name in merged.get("required", []) if isinstance(merged.get("required"), list) else []:
        if name not in props and any(extra is False for _, extra in sides):
            raise MergeError("additionalProperties", f"allOf: {name!r} is required by one schema and refused by the "
                             "other's additionalProperties false")
    if "properties" in first or "properties" in second:
        merged["properties"] = props
    extras = [extra for _, extra in sides if extra is not True]
    if any(extra is False for extra in extras):
        merged["additionalProperties"] = False
    elif extras:
        merged["additionalProperties"] = extras[0] if len(extras) == 1 else {"allOf": extras}


def _tighter(key: str, a: Any, b: Any) -> Any:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
        return a if not isinstance(a, (int, float)) or isinstance(a, bool) else b  # json_schema.py reports it
    return max(a, b) if key in LOWER else min(a, b)


def _types(a: Any, b: Any) -> list[str] | Any:
    names_a, names_b = ([t] if isinstance(t, str) else t for t in (a, b))
    if not isinstance(names_a, list) or not isinstance(names_b, list):
        return a  # json_schema.py reports it
    common = [t for t in names_a if t in names_b or t == "integer" and "number" in names_b]
    common += [t for t in names_b if t == "integer" and "number" in names_a and t not in common]
    if not common:
        raise MergeError("type", f"allOf: no value is of type {json.dumps(a)} and of type {json.dumps(b)}")
    return common


def _values(side: dict) -> list:
    return [side["const"]] if "const" in side else side["enum"] if isinstance(side["enum"], list) else []


def _names(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _tuple(value: Any) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def _short(value: Any) -> str:
    return _canonical(value)[:40]
