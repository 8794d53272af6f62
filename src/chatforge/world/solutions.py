"""Exact answers and worked solutions for the arithmetic and string tasks."""

from __future__ import annotations

from chatforge.world.prompts import LETTER_SEPARATOR

OPERATOR_SYMBOLS: dict[str, str] = {"+": "+", "-": "-", "*": "×"}
_COLUMN_NAMES = ("Ones", "Tens", "Hundreds", "Thousands", "Ten-thousands", "Hundred-thousands", "Millions")


def compute(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown operator {op!r}")


def string_answer(task: str, word: str, letter: str = "", spelled: bool = False) -> str:
    """The exact answer; reverse and sort_letters answer in the prompt's form ("s g n i v a s" when spelled)."""
    joiner = LETTER_SEPARATOR if spelled else ""
    if task == "reverse":
        return joiner.join(word[::-1])
    if task == "sort_letters":
        return joiner.join(sorted(word))
    if task == "count_letter":
        return str(word.count(letter))
    raise ValueError(f"not a string task: {task!r}")


# How column working is written (docs/world_learnability.md, "Arithmetic always worked, ones first"):
#   columns     a line per column, ones first; the result is then stated whole ("So 47 + 5 = 52.")
#   ones_first  the same lines, each ending in the digit it writes; then those digits listed in the
#               order the columns wrote them and that list reversed ("In order: 5 2."), so the result
#               is read off a list the letter-reversal skill turns round, not gathered across lines
#   aligned     ones_first, preceded by both operands spelled ones first ("Ones first: 7 4 + 5."), so
#               each column's digits sit at the same position of two short lists
WORKING_STYLES = ("columns", "ones_first", "aligned")


def worked_lines(a: int, op: str, b: int, style: str = "columns") -> list[str]:
    """A step-by-step solution; every line holds an "=" or a digit list, and the last states the result."""
    if style not in WORKING_STYLES:
        raise ValueError(f"unknown working style {style!r}; choose one of {', '.join(WORKING_STYLES)}")
    symbol = OPERATOR_SYMBOLS[op]
    if op == "*":
        # By one digit, the new styles split the other factor by place (47 × 6 = 40 × 6 + 7 × 6), so
        # no line asks for a two-digit product in one step; "columns" keeps the world's older working.
        by_places_of_a = style != "columns" and b < 10 <= a
        lines = _sum_of_products(a, b, [(p, b) for p in _places(a)] if by_places_of_a else [(a, p) for p in _places(b)])
    else:
        columns = _column_addition(a, b) if op == "+" else _column_subtraction(a, b, say_written=style != "columns")
        lines = [line for line, _ in columns]
        if style != "columns":
            written = [digit for _, digit in columns]
            in_order = written[::-1]
            while len(in_order) > 1 and in_order[0] == 0:  # 52 - 47 writes 5 0: the result is 5
                in_order = in_order[1:]
            lines += [f"Written ones first: {_spaced(written)}.", f"In order: {_spaced(in_order)}."]
            if style == "aligned":
                lines.insert(0, f"Ones first: {_spaced(_digits(a, len(str(a))))} {symbol} {_spaced(_digits(b, len(str(b))))}.")
    return lines + [f"So {a} {symbol} {b} = {compute(a, op, b)}."]


def _spaced(digits: list[int]) -> str:
    return " ".join(str(d) for d in digits)


def _digits(n: int, width: int) -> list[int]:
    """Digits from the ones column upwards, padded with zeros to `width`."""
    return [(n // 10**i) % 10 for i in range(width)]


def _column_addition(a: int, b: int) -> list[tuple[str, int]]:
    """(line, digit written) per column, ones first."""
    width = max(len(str(a)), len(str(b)))
    lines, carry = [], 0
    for column, (x, y) in enumerate(zip(_digits(a, width), _digits(b, width))):
        total = x + y + carry
        carried = f" + {carry}" if carry else ""
        carry = total // 10
        tail = f", write {total % 10} and carry {carry}" if carry else f", write {total}"
        lines.append((f"{_COLUMN_NAMES[column]}: {x} + {y}{carried} = {total}{tail}.", total % 10))
    if carry:
        lines.append((f"{_COLUMN_NAMES[width]}: write the carry, {carry}.", carry))
    return lines


def _column_subtraction(a: int, b: int, say_written: bool = False) -> list[tuple[str, int]]:
    """(line, digit written) per column, ones first; `say_written` ends each line with ", write D"
    as the addition lines always do."""
    if a < b:
        raise ValueError("column subtraction here needs a >= b")
    width = len(str(a))
    lines, borrow = [], 0
    for column, (x, y) in enumerate(zip(_digits(a, width), _digits(b, width))):
        # A borrow taken by the column below is paid back here as an extra "- 1".
        subtract = f"{y} - 1" if borrow else f"{y}"
        needed = y + borrow
        if x < needed:
            digit = x + 10 - needed
            step = f"{x} - {subtract} needs a borrow, so {x + 10} - {subtract} = {digit}"
            borrow = 1
        else:
            digit = x - needed
            step = f"{x} - {subtract} = {digit}"
            borrow = 0
        written = f", write {digit}" if say_written else ""
        lines.append((f"{_COLUMN_NAMES[column]}: {step}{written}.", digit))
    return lines


def _places(n: int) -> list[int]:
    """n's non-zero digits at their place values, largest first: 4325 -> [4000, 300, 20, 5]."""
    return [int(d) * 10**i for i, d in enumerate(reversed(str(n))) if d != "0"][::-1]


def _sum_of_products(a: int, b: int, terms: list[tuple[int, int]]) -> list[str]:
    if len(terms) == 1:
        return [f"{a} × {b} = {a * b}."]
    return [
        f"{a} × {b} = " + " + ".join(f"{x} × {y}" for x, y in terms),
        "= " + " + ".join(str(x * y) for x, y in terms),
        f"= {a * b}",
    ]
