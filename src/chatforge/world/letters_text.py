"""Letter puzzles as pretraining text: solved reversals, sorts, counts and repeats of spelled strings.

The letter tasks start by reading letters out of the prompt, which needs an induction circuit
(attend to the token after an earlier occurrence of the current context). The world's fact text
gives a tiny model little reason to build one: `llama-2m` pretrained on it copied 0 of 40 random
spelled strings (examples/world/copy_probe.py), and 15% of rows of a pure copy drill brought that to
32 of 40 in 1,200 steps (docs/world_learnability.md, "Why hyphens"). This file is that drill made part
of the world, as the solved arithmetic is for sums: puzzles on the *training* words only (held-out
words never appear, as in every task file; tested) and on random letter strings that are not English
words, each answer written out, the strings spelled as the tasks spell them.
"""

from __future__ import annotations

from chatforge.world.prompts import spell
from chatforge.world.prose import english_words
from chatforge.world.records import PretrainDoc
from chatforge.world.seeding import rng_for
from chatforge.world.solutions import string_answer

PUZZLES_PER_DOCUMENT = 12
RANDOM_SHARE = 0.5  # puzzles on random letter strings, which only copying (not recall of a word) solves
# Sizes give tens of thousands of puzzles: with a few thousand, a 2M model seeing them for 5 epochs
# memorised the random strings instead of copying them (1 of 40 copied after 800 steps).
_TITLES = ("Letter puzzles, solved", "Spelling exercises with answers", "Letter games")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
# Repeats are the plain copy drill (the circuit every task needs first), so they get the largest share.
_KINDS, _KIND_WEIGHTS = ("repeat", "reverse", "sort", "count"), (0.4, 0.2, 0.2, 0.2)


def _puzzle(kind: str, letters: str, rng) -> str:
    shown = spell(letters)
    if kind == "repeat":
        return f"Say {shown} three times: {shown} ; {shown} ; {shown}."
    if kind == "reverse":
        answer = string_answer("reverse", letters, spelled=True)
        return rng.choice((f"Backwards, {shown} is {answer}.", f"The letters {shown} in reverse order are {answer}."))
    if kind == "sort":
        answer = string_answer("sort_letters", letters, spelled=True)
        return rng.choice((f"Sorted, {shown} becomes {answer}.", f"In alphabetical order, {shown} is {answer}."))
    letter = rng.choice(sorted(set(letters))) if rng.random() < 0.8 else rng.choice(_LETTERS)
    count = int(string_answer("count_letter", letters, letter))
    return f'The letter "{letter}" occurs {count} {"time" if count == 1 else "times"} in {shown}.'


def _random_non_word(rng, english: set[str]) -> str:
    """3-8 random letters that are no English word, so no held-out word can appear."""
    while True:
        letters = "".join(rng.choice(_LETTERS) for _ in range(rng.randint(3, 8)))
        if letters not in english:
            return letters


def letter_documents(seed: int, count: int, train_words: list[str]) -> list[PretrainDoc]:
    """`count` solved letter puzzles, `PUZZLES_PER_DOCUMENT` to a document, on training words and on
    random strings that are no English word (so no held-out word can appear)."""
    rng = rng_for(seed, "letters-text")
    english = set(english_words())
    words = [w for w in train_words if 3 <= len(w) <= 9]
    docs: list[PretrainDoc] = []
    blocks: list[str] = []
    for _ in range(count):
        letters = _random_non_word(rng, english) if rng.random() < RANDOM_SHARE else rng.choice(words)
        blocks.append(_puzzle(rng.choices(_KINDS, weights=_KIND_WEIGHTS)[0], letters, rng))
        if len(blocks) == PUZZLES_PER_DOCUMENT:
            docs.append(_document(len(docs), rng.choice(_TITLES), blocks))
            blocks = []
    if blocks:
        docs.append(_document(len(docs), rng.choice(_TITLES), blocks))
    return docs


def _document(index: int, title: str, blocks: list[str]) -> PretrainDoc:
    return {"id": f"letters-{index:06d}", "world": "general", "source": "letters", "style": "solved_puzzles",
            "text": title + "\n\n" + "\n".join(blocks)}
