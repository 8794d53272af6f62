"""Overlap of a recipe's training data with its evaluation sets (decontamination).

A data-cleaning stage that decontaminates writes its own result into its summary; the report shows
that one when the recipe has it. Otherwise `ngram_overlap` is the provisional check: an eval item is
flagged when it shares a word n-gram (n = 13, as GPT-3's decontamination; an item shorter than n
words counts when it appears whole) with any training document. System prompts are left out on both
sides: they are shared instructions, not content.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

WORD = re.compile(r"\w+")
N = 13


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> Iterator[tuple[str, ...]]:
    for i in range(len(tokens) - n + 1):
        yield tuple(tokens[i : i + n])


def item_texts(path: Path, limit: int | None = None) -> Iterator[str]:
    """The text of each record of a JSONL file (every string of it but system prompts and ids), of each
    row of a CSV file, or of each CSV file's rows under a directory (a C-Eval root: its test split)."""
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
        if key not in ("id", "role", "task", "task_type", "category", "kind", "source"):
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


def contaminated(item: str, grams: set[tuple[str, ...]], joined: str, n: int = N) -> bool:
    tokens = words(item)
    if not tokens:
        return False
    if len(tokens) < n:
        return f" {' '.join(tokens)} " in f" {joined} "
    return any(g in grams for g in ngrams(tokens, n))


def ngram_overlap(train_files: list[Path], eval_sets: dict[str, Path], n: int = N, max_items: int = 2000) -> dict:
    """Per eval set: items checked, items sharing an n-gram with the training files, and the share."""
    grams, joined = training_index((t for f in train_files if f.exists() for t in item_texts(f)), n)
    out = {}
    for name, path in eval_sets.items():
        if not path.exists():
            continue
        items = list(item_texts(path, max_items))
        hits = sum(contaminated(item, grams, joined, n) for item in items)
        out[name] = {"path": str(path), "items": len(items), "overlapping": hits, "share": hits / len(items) if items else 0.0}
    return {"method": f"word {n}-gram overlap (provisional)", "n": n, "train_files": [str(f) for f in train_files], "sets": out}
