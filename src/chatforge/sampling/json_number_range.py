"""`minimum` / `maximum` (and their exclusive forms) of a JSON Schema, as the JSON automaton enforces them.

The automaton reads a number byte by byte, so it must know after every byte whether some way to
finish the number lands inside a range: `reachable(prefix, ranges, budget)`. A number is at most
`budget` bytes (json_prefix.MAX_NUMBER) and, under bounds, has no exponent, so the completions of a
prefix are finitely many decimal grids, and the question is answered exactly with integers and
fractions (no float arithmetic).

What "inside" means follows how a client reads the document (Python's `json`, JavaScript numbers
aside): a number without `.` is read as an exact integer and compared exactly; one with `.` is read
as the nearest double, so it is inside when that double is. The doubles inside are those from the
first double at or above the minimum (above, for exclusiveMinimum) to the last at or below the
maximum; a decimal rounds to one of them exactly when it lies strictly between the midpoints just
outside them (`frac_lo`, `frac_hi`; a decimal exactly on a midpoint is refused, whichever way its tie
would round).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

_DIGITS = "0123456789"
MAX_NUMBER = 32  # bytes of a number at most (json_prefix.py): under bounds, the budget of `reachable`


@dataclass(frozen=True)
class NumberRange:
    """One interval of allowed numbers. None = unbounded on that side. `integer`: no `.` may be written."""

    int_lo: int | None = None  # the least integer written without "."
    int_hi: int | None = None
    frac_lo: Fraction | None = None  # a value written with "." must be > frac_lo and < frac_hi
    frac_hi: Fraction | None = None
    integer: bool = False

    @property
    def bounded(self) -> bool:
        return any(b is not None for b in (self.int_lo, self.int_hi, self.frac_lo, self.frac_hi))


def number_range(integer: bool, minimum=None, maximum=None, exclusive_minimum=None, exclusive_maximum=None) -> NumberRange:
    """The range of JSON Schema's four bounds (finite numbers, None when absent)."""
    lows = [(Fraction(minimum), False)] if minimum is not None else []
    lows += [(Fraction(exclusive_minimum), True)] if exclusive_minimum is not None else []
    highs = [(Fraction(maximum), False)] if maximum is not None else []
    highs += [(Fraction(exclusive_maximum), True)] if exclusive_maximum is not None else []
    int_lo = max((math.floor(b) + 1 if strict else math.ceil(b) for b, strict in lows), default=None)
    int_hi = min((math.ceil(b) - 1 if strict else math.floor(b) for b, strict in highs), default=None)
    frac_lo = max((_rounds_up_above(b, strict) for b, strict in lows), default=None)
    frac_hi = min((-_rounds_up_above(-b, strict) for b, strict in highs), default=None)
    return NumberRange(int_lo, int_hi, frac_lo, frac_hi, integer)


def _rounds_up_above(bound: Fraction, strict: bool) -> Fraction:
    """The midpoint below the least double >= bound (> bound when strict): the decimals above it
    read as doubles >= (>) bound."""
    x = float(bound)  # the nearest double
    if Fraction(x) < bound or (strict and Fraction(x) == bound):
        x = math.nextafter(x, math.inf)
    return (Fraction(x) + Fraction(math.nextafter(x, -math.inf))) / 2


def reachable(prefix: str, ranges: tuple[NumberRange, ...], budget: int) -> bool:
    """Whether `prefix` (the start of a JSON number: `-`, digits, `.`, digits; no exponent) can be
    finished, within `budget` bytes in all, into a number inside one of `ranges`. With `budget ==
    len(prefix)`: whether the prefix is itself such a number."""
    room = budget - len(prefix)
    if room < 0:
        return False
    negative = prefix.startswith("-")
    unsigned = prefix[1:] if negative else prefix
    whole, dot, fraction = unsigned.partition(".")
    if not whole:  # no digit yet: one of them comes next (or the sign, at the very start)
        starts = _DIGITS + ("-" if not prefix else "")
        return room > 0 and any(reachable(prefix + d, ranges, budget) for d in starts)
    return any(_reachable_in(int(whole), whole == "0", dot == ".", fraction, room, _magnitudes(r, negative))
               for r in ranges)


def _magnitudes(r: NumberRange, negative: bool) -> NumberRange:
    """The range of the number's absolute value, for a number of this sign."""
    if not negative:
        return r
    return NumberRange(_negated(r.int_hi), _negated(r.int_lo), _negated(r.frac_hi), _negated(r.frac_lo), r.integer)


def _negated(bound):
    return None if bound is None else -bound


def _reachable_in(whole: int, zero: bool, dot: bool, fraction: str, room: int, r: NumberRange) -> bool:
    if dot:  # the integer part is written: only more fraction digits (at least one after the ".")
        if r.integer or (not fraction and room == 0):
            return False
        digits = len(fraction) + room
        start = whole + Fraction(int(fraction or "0"), 10 ** len(fraction))
        return _grid_hit(start, start + Fraction(1, 10 ** len(fraction)), Fraction(1, 10 ** digits), r)
    extra_digits = [0] if zero else range(room + 1)  # "0" takes no more digits
    for m in extra_digits:
        low, high = whole * 10 ** m, (whole + 1) * 10 ** m  # integer parts [low, high)
        if r.int_hi is not None and low > r.int_hi and (r.integer or r.frac_hi is None or low >= r.frac_hi):
            return False  # every later m starts higher still
        if _int_hit(low, high - 1, r):
            return True
        fraction_digits = room - m - 1  # after "." and the integer digits
        if not r.integer and fraction_digits >= 1 and _grid_hit(Fraction(low), Fraction(high), Fraction(1, 10 ** fraction_digits), r):
            return True
    return False


def _int_hit(low: int, high: int, r: NumberRange) -> bool:
    """Whether an integer in [low, high] lies inside r's integer bounds."""
    if r.int_lo is not None:
        low = max(low, r.int_lo)
    if r.int_hi is not None:
        high = min(high, r.int_hi)
    return low <= high


def _grid_hit(start: Fraction, end: Fraction, step: Fraction, r: NumberRange) -> bool:
    """Whether a multiple of `step` in [start, end) lies strictly between r's bounds for numbers with a
    "."; `start` is itself a multiple of `step`."""
    low, high = start, end - step
    if r.frac_lo is not None:
        low = max(low, (math.floor(r.frac_lo / step) + 1) * step)
    if r.frac_hi is not None:
        high = min(high, (math.ceil(r.frac_hi / step) - 1) * step)
    return low <= high
