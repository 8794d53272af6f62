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
import threading
import time
from collections import deque
from contextlib import contextmanager

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
    # In a class, `last` is what came before: "start", "item" (a character) or "range" (a finished a-z),
    # so that a literal `-` (first, last, or after a range; greenery wants it escaped) can be told from a range's.
    in_class, i, out, last = False, 0, [], "start"
    while i < len(core):
        c = core[i]
        if c == "\\":
            code = _code_escape(core, i)
            if code is not None:  # \uXXXX, \xHH: greenery reads the character itself
                char = chr(code[0])
                token, i = (char if char.isalnum() or code[0] >= 0x80 else "\\" + char), i + code[1]
            else:
                token, i = core[i:i + 2], i + 2
        elif in_class:
            i += 1
            if c == "]":
                in_class, token = False, c
            elif c == "-" and (last != "item" or core[i:i + 1] == "]"):
                token = "\\-"  # a literal hyphen
            elif c == "-":
                out.append(c)
                last = "dash"
                continue
            else:
                token = c
        elif c == "[":
            negated = core[i + 1:i + 2] == "^"
            token, i, in_class, last = "[^" if negated else "[", i + (2 if negated else 1), True, "start"
            out.append(token)
            continue
        elif c in "^$":
            raise PatternError(f"anchor {c!r} inside the pattern (only a leading ^ and a trailing $ are supported)")
        else:
            token, i = c, i + 1
        if in_class:
            last = "range" if last == "dash" else "item"
        out.append(token)
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
    """greenery's automaton of a whole-string expression (PatternError when greenery cannot read it, or
    when building it takes more than MAX_DFA_STATES states)."""
    from greenery import parse

    try:
        tree = parse(expression)
    except Exception as exc:  # greenery's parse errors have no common base class
        raise PatternError(f"cannot read the regular expression ({type(exc).__name__}: {exc}); supported: "
                           "characters, classes, groups, |, *, +, ?, {m,n}, \\d \\w \\s") from exc
    with _budget():
        return tree.to_fsm()


def intersect(first, second):
    with _budget():
        return first & second


MAX_DFA_STATES = 1000  # states of one automaton greenery builds on the way (each crawl)
MAX_SECONDS = 5.0  # for all of one call's building: greenery's counted repetitions cost time, not states
_crawl_lock = threading.Lock()
_deadline = [0.0]


@contextmanager
def _budget():
    """greenery builds every automaton with its module function `crawl`, a subset construction that
    has no bound: a schema is part of a request, and an unanchored `a.{10}` (read as `.*a.{10}.*`) took
    71 s in it on this machine, `^(?:[a-z]{2,8}-){1,20}x$` 48 s. While our call runs, `crawl` is this
    bounded one (the same walk, with a dict for the state index instead of a list search): past
    MAX_DFA_STATES states, or MAX_SECONDS since the call began, it stops with PatternError."""
    import greenery.fsm as fsm

    with _crawl_lock:
        _deadline[0] = time.monotonic() + MAX_SECONDS
        original, fsm.crawl = fsm.crawl, _bounded_crawl
        try:
            yield
        finally:
            fsm.crawl = original


def _bounded_crawl(alphabet, initial, final, follow):
    from greenery.fsm import Fsm

    symbols = sorted(alphabet)
    states, index, transitions = [initial], {_hashable(initial): 0}, {}
    for i, state in enumerate(states):  # the list grows while it is walked
        if time.monotonic() > _deadline[0]:
            raise PatternError(f"the pattern's automaton takes more than {MAX_SECONDS:g} s to build (counted "
                               "repetitions such as {1,20} of a group cost most)")
        row = {}
        for symbol in symbols:
            target = follow(state, symbol)
            key = _hashable(target)
            if key not in index:
                if len(states) >= MAX_DFA_STATES:
                    raise PatternError(f"the pattern's automaton needs more than {MAX_DFA_STATES} states (an "
                                       "unanchored pattern P is read as .*P.*: anchor it with ^...$ if that is meant)")
                index[key] = len(states)
                states.append(target)
            row[symbol] = index[key]
        transitions[i] = row
    finals = {i for i, state in enumerate(states) if final(state)}
    return Fsm(alphabet=alphabet, states=set(range(len(states))), initial=0, finals=finals, map=transitions)


def _hashable(state):
    """greenery's meta-states are ints, tuples, sets and dicts (of those): a key that compares the same."""
    if isinstance(state, dict):
        return ("dict", frozenset((k, _hashable(v)) for k, v in state.items()))
    if isinstance(state, (set, frozenset)):
        return ("set", frozenset(_hashable(v) for v in state))
    if isinstance(state, tuple):
        return tuple(_hashable(v) for v in state)
    return state


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
        try:
            with _budget():
                return self.fsm.isdisjoint(other.fsm)
        except PatternError:  # too large to tell: not proven apart
            return False


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
        fsm = intersect(fsm, regex_fsm(part))
    return StringPattern(fsm, min_length, max_length, " & ".join(parts))
