"""The solved letter puzzles in pretraining text (pretrain/letters_train.jsonl): every answer right,
no held-out word anywhere, strings spelled as the tasks spell them."""

from __future__ import annotations

import re

from world_files import read_jsonl

from chatforge.world.letters_text import letter_documents
from chatforge.world.prose import english_words, split_words

SPELLED = re.compile(r"(?<![A-Za-z])[a-z](?: [a-z])+(?![A-Za-z])")


def _letters(spelled: str) -> str:
    return spelled.replace(" ", "")


def check_line(line: str) -> str:
    """Which puzzle a line solves, after asserting its answer by hand."""
    if m := re.fullmatch(r"Say ([a-z ]+) three times: ([a-z ]+) ; ([a-z ]+) ; ([a-z ]+)\.", line):
        assert m.group(1) == m.group(2) == m.group(3) == m.group(4)
        return "repeat"
    if m := re.fullmatch(r"(?:Backwards, ([a-z ]+) is|The letters ([a-z ]+) in reverse order are) ([a-z ]+)\.", line):
        assert _letters(m.group(3)) == _letters(m.group(1) or m.group(2))[::-1]
        return "reverse"
    if m := re.fullmatch(r"(?:Sorted, ([a-z ]+) becomes|In alphabetical order, ([a-z ]+) is) ([a-z ]+)\.", line):
        assert _letters(m.group(3)) == "".join(sorted(_letters(m.group(1) or m.group(2))))
        return "sort"
    m = re.fullmatch(r'The letter "([a-z])" occurs (\d+) times? in ([a-z ]+)\.', line)
    assert m, line
    assert int(m.group(2)) == _letters(m.group(3)).count(m.group(1))
    return "count"


def test_every_puzzle_is_solved_right_and_every_kind_appears():
    docs = letter_documents(7, 240, split_words(7)["train"])
    assert len(docs) == 20 and all(d["source"] == "letters" for d in docs)
    kinds = [check_line(line) for d in docs for line in d["text"].split("\n\n", 1)[1].splitlines()]
    assert len(kinds) == 240 and set(kinds) == {"repeat", "reverse", "sort", "count"}


def test_no_held_out_word_is_ever_spelled(tiny_dir):
    words = split_words(1234)
    held_out, english = set(words["test"]), set(english_words())
    seen_words = seen_random = 0
    for doc in read_jsonl(tiny_dir / "pretrain/letters_train.jsonl"):
        for span in SPELLED.findall(doc["text"]):
            letters = _letters(span)
            assert letters not in held_out, span
            if letters in english:
                seen_words += 1
            else:
                seen_random += 1
    assert seen_words and seen_random  # both halves of the design are there


def test_the_file_is_written_with_the_tiny_world(tiny_dir):
    docs = read_jsonl(tiny_dir / "pretrain/letters_train.jsonl")
    assert len(docs) == 20  # tiny: 240 puzzles, 12 to a document
