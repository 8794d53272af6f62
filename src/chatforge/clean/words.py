"""An offline word and sentence splitter for datatrove's filters.

datatrove's Gopher and C4 filters split words with spaCy or NLTK, which need a model or punkt data
downloaded at run time. They accept any `WordTokenizer` in place of a language code, so this one
works offline. Words are Gopher's (Rae et al. 2021): white-space-separated tokens, so `"the,"` is one
word with a letter in it and `!!!` one symbol word. (spaCy splits punctuation off into words of its
own, which pushes prose that quotes code, like Python's documentation, under Gopher's rule that 80%
of words hold a letter.) Sentences end at . ! ? (or 。！？) followed by white space.
"""

from __future__ import annotations

import re

from datatrove.utils.word_tokenizers import WordTokenizer

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")


class RegexWordTokenizer(WordTokenizer):
    def __init__(self) -> None:
        super().__init__("regex")

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans, start = [], 0
        for match in _SENTENCE_END.finditer(text):
            spans.append((start, match.start()))
            start = match.end()
        if start < len(text):
            spans.append((start, len(text)))
        return spans


WORDS = RegexWordTokenizer()
