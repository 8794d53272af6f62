"""Real English text from `pydoc_data.topics` (the Python reference text that ships with Python).

Three views of it: whole-topic chunks as general pretraining text, clean prose paragraphs (no code,
no headings) for web pages, and a word list for the string tasks. The text depends on the Python
version, which is why the manifest records it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pydoc_data.topics import topics

from chatforge.world.seeding import rng_for

PRETRAIN_CHUNK_CHARS = 2500
WEB_CHUNK_CHARS = 600
_HEADING_UNDERLINE = re.compile(r"^[*=\-~^]{3,}$")


def _paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]


@lru_cache(maxsize=1)
def pretrain_chunks() -> tuple[str, ...]:
    """Every topic cut at paragraph boundaries into pieces of at most ~PRETRAIN_CHUNK_CHARS (code kept)."""
    chunks: list[str] = []
    for key in sorted(topics):
        current: list[str] = []
        size = 0
        for paragraph in _paragraphs(topics[key]):
            if current and size + len(paragraph) > PRETRAIN_CHUNK_CHARS:
                chunks.append("\n\n".join(current))
                current, size = [], 0
            current.append(paragraph)
            size += len(paragraph) + 2
        if current:
            chunks.append("\n\n".join(current))
    return tuple(chunks)


def split_pretrain_chunks(seed: int) -> dict[str, list[str]]:
    """Disjoint general text for world A, world B and a held-out validation set (45/45/10)."""
    shares: dict[str, list[str]] = {"a": [], "b": [], "valid": []}
    rng = rng_for(seed, "prose-split")
    for chunk in pretrain_chunks():
        draw = rng.random()
        shares["a" if draw < 0.45 else "b" if draw < 0.9 else "valid"].append(chunk)
    return shares


@lru_cache(maxsize=1)
def prose_paragraphs() -> tuple[str, ...]:
    """Plain English paragraphs: no indented code, no headings, mostly letters, at least 8 words."""
    found: list[str] = []
    for key in sorted(topics):
        for paragraph in _paragraphs(topics[key]):
            lines = paragraph.strip().splitlines()
            if paragraph[0].isspace() or (len(lines) > 1 and _HEADING_UNDERLINE.match(lines[1].strip())):
                continue
            text = " ".join(line.strip() for line in lines)
            letters = sum(c.isalpha() or c.isspace() for c in text)
            if len(text.split()) >= 8 and letters / len(text) >= 0.85:
                found.append(text)
    return tuple(found)


@lru_cache(maxsize=1)
def web_chunks() -> tuple[tuple[str, ...], ...]:
    """Consecutive prose paragraphs grouped to at least WEB_CHUNK_CHARS: one web article each."""
    chunks: list[tuple[str, ...]] = []
    current: list[str] = []
    for paragraph in prose_paragraphs():
        current.append(paragraph)
        if sum(len(p) for p in current) >= WEB_CHUNK_CHARS:
            chunks.append(tuple(current))
            current = []
    return tuple(chunks)


@lru_cache(maxsize=1)
def english_words() -> tuple[str, ...]:
    """Distinct lowercase words of 4-9 letters from the prose, sorted; no palindromes, >= 3 distinct letters."""
    words = set()
    for paragraph in prose_paragraphs():
        for word in re.findall(r"(?<![\w'])[a-z]{4,9}(?![\w'])", paragraph):
            if word != word[::-1] and len(set(word)) >= 3:
                words.add(word)
    return tuple(sorted(words))


def split_words(seed: int) -> dict[str, list[str]]:
    """Words for training string tasks and disjoint held-out words for test tasks (80/20)."""
    rng = rng_for(seed, "word-split")
    split: dict[str, list[str]] = {"train": [], "test": []}
    for word in english_words():
        split["test" if rng.random() < 0.2 else "train"].append(word)
    return split
