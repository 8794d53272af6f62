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


def worked_lines(a: int, op: str, b: int) -> list[str]:
    """A step-by-step solution; every line holds an "=", and the last states the result."""
    if op == "+":
        lines = _column_addition(a, b)
    elif op == "-":
        lines = _column_subtraction(a, b)
    else:
        lines = _partial_products(a, b)
    symbol = OPERATOR_SYMBOLS[op]
    return lines + [f"So {a} {symbol} {b} = {compute(a, op, b)}."]


def _digits(n: int, width: int) -> list[int]:
    """Digits from the ones column upwards, padded with zeros to `width`."""
    return [(n // 10**i) % 10 for i in range(width)]


def _column_addition(a: int, b: int) -> list[str]:
    width = max(len(str(a)), len(str(b)))
    lines, carry = [], 0
    for column, (x, y) in enumerate(zip(_digits(a, width), _digits(b, width))):
        total = x + y + carry
        carried = f" + {carry}" if carry else ""
        carry = total // 10
        tail = f", write {total % 10} and carry {carry}" if carry else f", write {total}"
        lines.append(f"{_COLUMN_NAMES[column]}: {x} + {y}{carried} = {total}{tail}.")
    if carry:
        lines.append(f"{_COLUMN_NAMES[width]}: write the carry, {carry}.")
    return lines


def _column_subtraction(a: int, b: int) -> list[str]:
    if a < b:
        raise ValueError("column subtraction here needs a >= b")
    width = len(str(a))
    lines, borrow = [], 0
    for column, (x, y) in enumerate(zip(_digits(a, width), _digits(b, width))):
        # A borrow taken by the column below is paid back here as an extra "- 1".
        subtract = f"{y} - 1" if borrow else f"{y}"
        needed = y + borrow
        if x < needed:
            step = f"{x} - {subtract} needs a borrow, so {x + 10} - {subtract} = {x + 10 - needed}"
            borrow = 1
        else:
            step = f"{x} - {subtract} = {x - needed}"
            borrow = 0
        lines.append(f"{_COLUMN_NAMES[column]}: {step}.")
    return lines


def _partial_products(a: int, b: int) -> list[str]:
    places = [int(d) * 10**i for i, d in enumerate(reversed(str(b))) if d != "0"][::-1]
    if len(places) == 1:
        return [f"{a} × {b} = {a * b}."]
    return [
        f"{a} × {b} = " + " + ".join(f"{a} × {p}" for p in places),
        "= " + " + ".join(str(a * p) for p in places),
        f"= {a * b}",
    ]
