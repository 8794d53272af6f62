"""A string's `pattern` and `format` as a finite automaton over characters, for the JSON automaton.

The regular expression is turned into a deterministic automaton by `greenery` (a small pure-Python
library, the one Outlines' and vLLM's regex guides descend from through its fork `interegular`),
intersected with the string's minLength/maxLength as a product with a character count, and pruned to
the states from which a whole match is still reachable. json_prefix.py feeds it the string's
characters as a parser decodes them and refuses a byte after which no match can be finished; the
closing quote only in an accepting state.

What is read how (JSON Schema's regexes are ECMA 262, unanchored):
- a pattern matches anywhere in the string unless it starts with `^` / ends with `$`; the automaton is
  of `.*(?:P).*` with the anchors taken off. Anchors anywhere else, lookarounds, backreferences and
  the like are refused (`SchemaError` naming the pattern).
- characters are Unicode code points; `\\uXXXX` / `\\xHH` escapes in the pattern are the characters
  they name; `\\d`, `\\w` are ASCII as in ECMA 262 (Python's `re` reads them as Unicode, a superset:
  every generated string still matches there), `\\s` is ASCII whitespace (ECMA's is wider).
- generated strings hold no control characters except tab and no line separators (U+2028/9): a `.`
  in ECMA and Python regexes does not match a line break, in greenery it does; refusing them keeps the
  automaton inside what validators accept. A pattern that needs one is refused.
- `format`: date, time, date-time (RFC 3339: real calendar days, leap years included; seconds up to
  59; `T`, `Z` in capitals; fractions of 1 to 6 digits), uuid, email (a dot-atom local part and a
  domain of dotted labels), ipv4, each as the regular expression below (a subset of what the format's
  RFC allows, every string of it valid). Others are refused.
"""

from __future__ import annotations

import bisect
from collections import deque

MAX_STATES = 4096  # product states (pattern x length) of one string's automaton: a schema is part of a request
# The code points a constrained string may hold: tab, then from space on, without U+2028/U+2029 and
# the surrogates (no UTF-8 form).
ALLOWED = ((0x09, 0x09), (0x20, 0x2027), (0x202A, 0xD7FF), (0xE000, 0x10FFFF))

_YEAR = r"(?:[1-9]\d{3}|0[1-9]\d{2}|00[1-9]\d|000[1-9])"
_LEAP = r"(?:\d\d(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (rf"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]\d|3[01])|(?:0[469]|11)-(?:0[1-9]|[12]\d|30)"
         rf"|02-(?:0[1-9]|1\d|2[0-8]))|{_LEAP}-02-29)")
_TIME = r"(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?(?:Z|[+\-](?:[01]\d|2[0-3]):[0-5]\d)"
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?\^_`{|}~\-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_HEX = "[0-9a-fA-F]"
FORMATS = {
    "date": _DATE,
    "time": _TIME,
    "date-time": f"{_DATE}T{_TIME}",
    "uuid": f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}",
    "email": rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+{_LABEL}",
    "ipv4": rf"(?:{_OCTET}\.){{3}}{_OCTET}",
}


class PatternError(ValueError):
    """A pattern outside what is supported, or no string meets it (json_schema.py adds the path)."""


def anchored(pattern: str) -> str:
    """The pattern as a whole-string expression: unanchored ends get `.*` (JSON Schema's search
    semantics), a leading `^` / trailing `$` is dropped; anchors elsewhere are refused."""
    starts, ends = pattern.startswith("^"), pattern.endswith("$") and not _escaped(pattern, len(pattern) - 1)
    core = pattern[1 if starts else 0:len(pattern) - 1 if ends else len(pattern)]
    in_class, i, out = False, 0, []
    while i < len(core):
        c = core[i]
        if c == "\\":
            code = _code_escape(core, i)
            if code is not None:  # \uXXXX, \xHH: greenery reads the character itself
                char = chr(code[0])
                out.append(char if char.isalnum() or code[0] >= 0x80 else "\\" + char)
                i += code[1]
                continue
            out.append(core[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if core[i + 1:i + 2] == "^":
                out.append(c)
                i += 1
                c = "^"
        elif c in "^$":
            raise PatternError(f"anchor {c!r} inside the pattern (only a leading ^ and a trailing $ are supported)")
        out.append(c)
        i += 1
    core = "".join(out)
    return ("" if starts else ".*") + f"(?:{core})" + ("" if ends else ".*")


def _code_escape(text: str, at: int) -> tuple[int, int] | None:
    """(code point, length) of a `\\uXXXX` or `\\xHH` escape at `at`, else None."""
    for letter, digits in (("u", 4), ("x", 2)):
        hexes = text[at + 2:at + 2 + digits]
        if text[at + 1:at + 2] == letter and len(hexes) == digits and all(h in "0123456789abcdefABCDEF" for h in hexes):
            return int(hexes, 16), 2 + digits
    return None


def _escaped(text: str, index: int) -> bool:
    slashes = len(text[:index]) - len(text[:index].rstrip("\\"))
    return slashes % 2 == 1


def regex_fsm(expression: str):
    """greenery's automaton of a whole-string expression (PatternError when greenery cannot read it)."""
    from greenery import parse

    try:
        return parse(expression).to_fsm()
    except Exception as exc:  # greenery's parse errors have no common base class
        raise PatternError(f"cannot read the regular expression ({type(exc).__name__}: {exc}); supported: "
                           "characters, classes, groups, |, *, +, ?, {m,n}, \\d \\w \\s") from exc


class StringPattern:
    """Pattern (x format) x length: states are ints, 0 the start; `step` gives the next state or None."""

    def __init__(self, fsm, min_length: int = 0, max_length: int | None = None, source: str = ""):
        self.fsm, self.source = fsm, source
        symbols = sorted(fsm.alphabet, key=repr)
        spans: list[list[tuple[int, int]]] = []
        for charclass in symbols:
            ranges = list(charclass.ord_ranges)
            spans.append(_intersect(_complement(ranges) if charclass.negated else ranges, ALLOWED))
        self.spans = spans  # per symbol: the allowed code points, as sorted ranges
        self._starts = sorted((lo, hi, s) for s, ranges in enumerate(spans) for lo, hi in ranges)
        self._lows = [lo for lo, _, _ in self._starts]
        index = {charclass: s for s, charclass in enumerate(symbols)}
        # the product with the character count (capped at min_length when there is no maximum)
        start = (fsm.initial, 0)
        ids, order, edges = {start: 0}, [start], []
        queue = deque([start])
        while queue:
            q, k = queue.popleft()
            out: dict[int, int] = {}
            nk = k + 1 if max_length is not None else min(k + 1, min_length)
            if max_length is None or nk <= max_length:
                for charclass, target in fsm.map.get(q, {}).items():
                    s = index[charclass]
                    if not spans[s]:
                        continue
                    state = (target, nk)
                    if state not in ids:
                        if len(ids) >= MAX_STATES:
                            raise PatternError(f"the pattern with its length bounds has more than {MAX_STATES} states")
                        ids[state] = len(order)
                        order.append(state)
                        queue.append(state)
                    out[s] = ids[state]
            edges.append(out)
        finals = {i for i, (q, k) in enumerate(order) if q in fsm.finals and k >= min_length}
        live = set(finals)  # states from which a final one is reachable
        into: list[list[int]] = [[] for _ in order]
        for i, out in enumerate(edges):
            for j in out.values():
                into[j].append(i)
        queue = deque(finals)
        while queue:
            for i in into[queue.popleft()]:
                if i not in live:
                    live.add(i)
                    queue.append(i)
        if 0 not in live:
            raise PatternError("no string meets the pattern/format with the length bounds (generated strings hold "
                               "no line breaks or control characters other than tab)")
        self.edges = [{s: j for s, j in out.items() if j in live} for out in edges]
        self.finals = frozenset(finals)

    def symbol(self, code: int) -> int | None:
        at = bisect.bisect_right(self._lows, code) - 1
        if at >= 0:
            lo, hi, s = self._starts[at]
            if lo <= code <= hi:
                return s
        return None

    def step(self, state: int, code: int) -> int | None:
        """The state after character `code`, or None when no match can be finished after it."""
        s = self.symbol(code)
        return None if s is None else self.edges[state].get(s)

    def can_take(self, state: int, lo: int, hi: int) -> bool:
        """Whether some character in [lo, hi] can come next (the first bytes of a UTF-8 character)."""
        return any(a <= hi and lo <= b for s in self.edges[state] for a, b in self.spans[s])

    def final(self, state: int) -> bool:
        return state in self.finals

    def fullmatch(self, text: str) -> bool:
        state: int | None = 0
        for c in text:
            state = self.step(state, ord(c))
            if state is None:
                return False
        return self.final(state)

    def disjoint(self, other: StringPattern) -> bool:
        """No string matches both regular expressions (lengths aside)."""
        return self.fsm.isdisjoint(other.fsm)


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, low = [], 0
    for a, b in sorted(ranges):
        if a > low:
            out.append((low, a - 1))
        low = max(low, b + 1)
    if low <= 0x10FFFF:
        out.append((low, 0x10FFFF))
    return out


def _intersect(first: list[tuple[int, int]], second) -> list[tuple[int, int]]:
    return [(max(a, c), min(b, d)) for a, b in first for c, d in second if max(a, c) <= min(b, d)]


def string_pattern(patterns, formats, min_length: int, max_length: int | None) -> StringPattern:
    """The automaton of a string's patterns and formats (all must match; several come from allOf) with
    its length bounds."""
    parts: list[str] = []
    for fmt in formats:
        if fmt not in FORMATS:
            raise PatternError(f"unsupported format {fmt!r} (supported: {', '.join(FORMATS)})")
        parts.append(FORMATS[fmt])
    parts += [anchored(pattern) for pattern in patterns]
    fsm = regex_fsm(parts[0])
    for part in parts[1:]:
        fsm = fsm & regex_fsm(part)
    return StringPattern(fsm, min_length, max_length, " & ".join(parts))
