"""Decode one JSON text (a JSONL line, a `.json` file, a request body) without letting hostile input
crash the process.

`json.loads` alone fails in ways a reader cannot treat as "a bad record":
- a UTF-8 byte order mark before the first record is "Unexpected UTF-8 BOM" (the record is lost);
- deeply nested arrays raise `RecursionError` from the C scanner;
- an integer literal of over 4,300 digits raises a bare `ValueError` (CPython's int-conversion limit);
- `"\\ud800"` decodes to a lone surrogate, which later fails to encode (tokenizers, log files);
- `NaN`, `Infinity` and `1e999` are accepted although JSON has no such numbers.

`decode_json` returns the value or raises `JsonRejected(reason, detail)`, which a reader writes to
its reject log and moves on. `jsonl_lines` splits a JSONL text into its records' lines.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64  # arrays/objects inside each other; real records nest a handful of levels
MAX_INT_DIGITS = 64  # an integer literal longer than this is not a count, an id or a rank
BOM = "\ufeff"

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # a JSON string, escapes included
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class JsonRejected(ValueError):
    """A JSON text that is not read, with a short machine-readable `reason` and a `detail` for people."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_json(raw: bytes | str, *, max_depth: int = MAX_DEPTH, max_int_digits: int = MAX_INT_DIGITS) -> Any:
    """The value of one JSON text, or `JsonRejected` with one of the reasons:

    not_utf8, bad_json, too_deep, number_too_long, non_finite_number, lone_surrogate.
    A leading byte order mark is dropped (editors on Windows write one before the first line).
    """
    if isinstance(raw, bytes | bytearray):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonRejected("not_utf8", f"invalid UTF-8 byte at offset {exc.start}") from None
    else:
        text = raw
    text = text.removeprefix(BOM)
    # Counting brackets is cheap; the exact depth is needed only when there are enough of them to matter.
    depth = nesting_depth(text) if text.count("[") + text.count("{") > max_depth else 0
    if depth > max_depth:
        raise JsonRejected("too_deep", f"arrays/objects nested {depth} deep; at most {max_depth} are read")

    def parse_int(literal: str) -> int:
        digits = len(literal.lstrip("-"))
        if digits > max_int_digits:
            raise JsonRejected("number_too_long", f"an integer of {digits} digits; at most {max_int_digits} are read")
        return int(literal)

    def parse_float(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise JsonRejected("non_finite_number", f"{literal[:40]} is out of the range of a 64-bit float")
        return value

    def parse_constant(name: str) -> float:
        raise JsonRejected("non_finite_number", f"{name} is not a JSON number")

    try:
        value = json.loads(text, parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant)
    except JsonRejected:
        raise
    except json.JSONDecodeError as exc:
        raise JsonRejected("bad_json", f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # the depth check bounds this; kept so that no limit setting can crash a reader
        raise JsonRejected("too_deep", "nested too deep for the JSON decoder") from None
    path = lone_surrogate_at(value) if _may_hold_surrogates(text) else None
    if path is not None:
        raise JsonRejected("lone_surrogate", f"{path} holds an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is not text")
    return value


def _may_hold_surrogates(text: str) -> bool:
    """False when no decoded string can hold a surrogate: the text has none and escapes none (`\\udc00`).
    Both checks run at C speed; walking every decoded string costs several times the decoding."""
    if _SURROGATE_ESCAPE.search(text):
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def nesting_depth(text: str) -> int:
    """How deeply arrays/objects nest in a JSON text (brackets inside strings do not count)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    # Unbalanced brackets are the decoder's business; only the running maximum matters here.
    return max(accumulate(_BRACKET_STEP[c] for c in brackets), default=0)


def lone_surrogate_at(value: Any) -> str | None:
    """The JSON path (`$.messages[0].content`) of the first string or key holding a lone surrogate."""
    stack: list[tuple[str, Any]] = [("$", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if _SURROGATE.search(key):
                    return f"{path} (a key)"
                stack.append((f"{path}.{key}", child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))
    return None


def jsonl_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of every non-blank line of a JSONL text, split at "\\n" only (a "\\r\\n"
    ending is dropped with it).

    `str.splitlines` also breaks at U+2028, U+2029, U+0085 and the other Unicode line separators,
    which JSON leaves unescaped inside strings (`json.dumps(..., ensure_ascii=False)` writes them as
    they are): it would cut such a record in two and lose it."""
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip():
            yield number, line
