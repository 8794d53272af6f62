"""Overlap of a recipe's training data with its evaluation sets (decontamination).

A data-cleaning stage that decontaminates writes its own result into its summary; the report shows
that one when the recipe has it. Otherwise `ngram_overlap` is the provisional check, on word 13-grams
(n = 13, as GPT-3's decontamination; an item shorter than n words counts when it appears whole). An
item's text is its string fields in order, less record metadata (`world`, `style`, ids, roles, task
names: a `style: table` field made "table" the first word of every table's n-grams) and system
prompts (shared instructions, not content), on both sides.

Two counts per eval set, because "shares a 13-gram" mixes two things:
- `overlapping`: items that share any n-gram with the training text (the usual, strict count);
- `mostly_overlapping`: items of which at least half the words lie inside shared n-grams, i.e. a
  large part of the item is training text, not one common phrase or template line. `words_covered`
  is that word share over the whole set.

A document-frequency filter (ignore n-grams found in many training documents, as cleaners do for
licence footers) was measured on the task world and does not separate its boilerplate: a table's
template header ("the table below lists 4 people, one per row. Name | Favourite colour | ...") is
one 13-gram per title, group size and column order, each in one of 228 training documents.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

WORD = re.compile(r"\w+")
N = 13
MOSTLY = 0.5  # an item this share of whose words lies inside shared n-grams is mostly training text
METADATA_KEYS = ("id", "role", "task", "task_type", "category", "kind", "source", "world", "style")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> Iterator[tuple[str, ...]]:
    for i in range(len(tokens) - n + 1):
        yield tuple(tokens[i : i + n])


def item_texts(path: Path, limit: int | None = None) -> Iterator[str]:
    """The text of each record of a JSONL file (its string fields but metadata and system prompts), of
    each row of a CSV file, or of each CSV file's rows under a directory (a C-Eval root: its test split)."""
    if path.is_dir():
        files = sorted(path.glob("test/*.csv")) or sorted(path.rglob("*.csv")) or sorted(path.rglob("*.jsonl"))
        for file in files:
            yield from item_texts(file, limit)
        return
    count = 0
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            for row in csv.reader(fh):
                yield " ".join(row)
                count += 1
                if limit and count >= limit:
                    return
        return
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            yield " ".join(_strings(record))
            count += 1
            if limit and count >= limit:
                return


def _strings(value, key: str = "") -> Iterator[str]:
    if isinstance(value, str):
        if key not in METADATA_KEYS:
            yield value
    elif isinstance(value, dict):
        if value.get("role") == "system":
            return
        for k, v in value.items():
            yield from _strings(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v, key)


def training_index(texts: Iterable[str], n: int = N) -> tuple[set[tuple[str, ...]], str]:
    """The training n-grams, and the whole training text as one space-joined word string (for items
    shorter than n words)."""
    grams: set[tuple[str, ...]] = set()
    joined: list[str] = []
    for text in texts:
        tokens = words(text)
        grams.update(ngrams(tokens, n))
        joined.append(" ".join(tokens))
    return grams, " \n ".join(joined)


def covered_words(item: str, grams: set[tuple[str, ...]], joined: str, n: int = N) -> tuple[int, int]:
    """(words of `item` inside an n-gram it shares with the training text, its words); an item
    shorter than n words is covered whole when it appears whole in the training text."""
    tokens = words(item)
    if not tokens:
        return 0, 0
    if len(tokens) < n:
        return (len(tokens) if f" {' '.join(tokens)} " in f" {joined} " else 0), len(tokens)
    inside = [False] * len(tokens)
    for i, gram in enumerate(ngrams(tokens, n)):
        if gram in grams:
            inside[i : i + n] = [True] * n
    return sum(inside), len(tokens)


def contaminated(item: str, grams: set[tuple[str, ...]], joined: str, n: int = N) -> bool:
    """Whether the item shares an n-gram with (or, short, appears whole in) the training text."""
    return covered_words(item, grams, joined, n)[0] > 0


def ngram_overlap(train_files: list[Path], eval_sets: dict[str, Path], n: int = N, max_items: int = 2000) -> dict:
    """Per eval set: items checked, items sharing an n-gram with the training files (and their share),
    items mostly made of shared n-grams, and the share of the set's words inside shared n-grams."""
    grams, joined = training_index((t for f in train_files if f.exists() for t in item_texts(f)), n)
    out = {}
    for name, path in eval_sets.items():
        if not path.exists():
            continue
        items = list(item_texts(path, max_items))
        inside, total = zip(*(covered_words(item, grams, joined, n) for item in items)) if items else ((), ())
        hits = sum(c > 0 for c in inside)
        mostly = sum(t > 0 and c / t >= MOSTLY for c, t in zip(inside, total))
        out[name] = {
            "path": str(path), "items": len(items), "overlapping": hits, "share": hits / len(items) if items else 0.0,
            "mostly_overlapping": mostly, "words_covered": sum(inside) / sum(total) if sum(total) else 0.0,
        }
    return {"method": f"word {n}-gram overlap (provisional)", "n": n, "mostly": MOSTLY,
            "train_files": [str(f) for f in train_files], "sets": out}
