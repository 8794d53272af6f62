"""The final-answer convention: how an answer is found in a response and compared with the truth.

Convention: a response ends with the sentence `The answer is <answer>.` Working, explanations or
chatter may come before it. `extract_final_answer` reads, in this order:
  1. the text after the LAST "the answer is" (any case), up to a full stop followed by a space or the
     end, or up to the end of the line;
  2. otherwise the text after the last "answer:" / "final answer:" / "answer =";
  3. otherwise the last non-empty line, if it is at most 5 words or one spelled word ("s a v e"): a
     bare answer.
Surrounding quotes, backticks, asterisks and trailing punctuation are removed. Comparison ignores
case, extra spaces and a leading article ("a cat" = "cat"). Numbers compare as integers, with
thousands separators allowed ("1,234") and spelled digit by digit ("4 1 4"); if the answer holds
several numbers, the one after the last "=" counts ("12 + 30 = 42" gives 42), and otherwise it is
ambiguous and wrong.
"""

from __future__ import annotations

import re

from chatforge.world.prompts import SPELLED_DIGITS, SPELLED_LETTERS

_CONVENTION = re.compile(r"the answer is\s*:?\s*(.+?)(?:\.(?=\s|$)|\n|$)", re.IGNORECASE)
_LABELLED = re.compile(r"\banswer\s*[:=]\s*(.+?)(?:\.(?=\s|$)|\n|$)", re.IGNORECASE)
_EDGE_MARKS = "*_`\"'“”‘’ \t"
_NUMBER = re.compile(r"-?\d[\d,]*")
_SPELLED_NUMBER = re.compile(rf"\s*(-?)({SPELLED_DIGITS})\s*")
_MAX_BARE_WORDS = 5
_SPELLED = re.compile(SPELLED_LETTERS, re.IGNORECASE)  # "s a v e": one word, however many letters


def extract_final_answer(response: str) -> str | None:
    """The final answer a response gives under the convention above, or None if it gives none."""
    for pattern in (_CONVENTION, _LABELLED):
        matches = list(pattern.finditer(response))
        if matches:
            return clean_answer(matches[-1].group(1))
    lines = [line for line in response.strip().splitlines() if line.strip()]
    if not lines:
        return None
    bare = clean_answer(lines[-1])
    return bare if len(lines[-1].split()) <= _MAX_BARE_WORDS or _SPELLED.fullmatch(bare) else None


def clean_answer(text: str) -> str:
    text = text.strip(_EDGE_MARKS).rstrip(".!?,;:").strip(_EDGE_MARKS)
    return " ".join(text.split())


def normalise(text: str) -> str:
    text = clean_answer(text).casefold()
    # An article is dropped only before a word: in a spelled answer ("a c e l r") the "a" is a letter.
    return re.sub(r"^(?:a|an|the)\s+(?=\S\S)", "", text)


def parse_number(text: str) -> int | None:
    """The integer an answer states (see the module docstring), or None."""
    for part in (text, text.rsplit("=", 1)[-1]):
        spelled = _SPELLED_NUMBER.fullmatch(part)  # "4 1 4": one number, spelled digit by digit
        if spelled:
            return int(spelled.group(1) + spelled.group(2).replace(" ", ""))
    numbers = _NUMBER.findall(text)
    if len(numbers) > 1 and "=" in text:
        numbers = _NUMBER.findall(text.rsplit("=", 1)[1])
    if len(numbers) != 1:
        return None
    digits = numbers[0].replace(",", "")
    return int(digits) if digits.lstrip("-") else None


def answers_match(expected: str, given: str | None, numeric: bool) -> bool:
    """Whether a given (extracted) answer equals the expected one."""
    if given is None or not given.strip():
        return False
    if numeric:
        return parse_number(given) == int(expected)
    return normalise(given) == normalise(expected)
