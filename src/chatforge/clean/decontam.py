"""Decontamination: word n-grams shared between training documents and evaluation sets.

Each evaluation path is one set, named `parent/stem` of the path. Its items are C-Eval rows (question
and options), JSONL records (every string value, each a separate segment, so no n-gram spans two
fields) or text lines. Text is lower-cased and split into words (`\\w+`). Segments under `min_words`
words (one-word answer options) are ignored; a longer segment still shorter than `n` words counts as one n-gram of its own length (a five-word question is found whole), as in
GPT-3's decontamination. N-grams found in more than 5% of a set's items (of at least 20) are that
set's boilerplate (a shared system prompt) and are not evidence of contamination.

A document gets the labels `contamination` ({set: shared n-grams}) and `contamination_example`;
with `min_matches` shared n-grams with any set it fails the step (flagged in label mode).
`summarize` turns the labelled documents into the summary JSON the recipe report card shows.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from datatrove.data import Document

from chatforge.clean.config import DecontamConfig
from chatforge.clean.judge import Check, labels
from chatforge.data.safe_json import jsonl_lines
from chatforge.errors import ConfigError

_WORD = re.compile(r"\w+")
BOILERPLATE_SHARE = 0.05
BOILERPLATE_MIN_ITEMS = 20


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _segments_of(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _segments_of(v)]
    if isinstance(value, list):
        return [s for v in value for s in _segments_of(v)]
    return []


def read_items(path: Path) -> list[list[str]]:
    """The items of one evaluation file, each a list of text segments."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        return [[row.get("question") or "", *(row.get(k) or "" for k in "ABCD")] if "question" in row
                else [v for v in row.values() if isinstance(v, str)] for row in rows]
    if suffix in (".jsonl", ".json"):
        items = []
        for number, line in jsonl_lines(path.read_text(encoding="utf-8")):
            try:
                items.append(_segments_of(json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path} line {number}: invalid JSON in an evaluation set ({exc.msg})") from None
        return items
    return [[line] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in (".csv", ".jsonl", ".json", ".txt"))
    if not path.exists():
        raise ConfigError(f"decontam.eval_sets: {path} not found")
    return [path]


class NgramIndex:
    """n-gram -> evaluation sets holding it, plus the shorter whole segments by length."""

    def __init__(self, n: int, min_words: int = 1):
        self.n = n
        self.min_words = min_words
        self.sets: dict[str, dict[str, Any]] = {}
        self.grams: dict[str, set[str]] = defaultdict(set)
        self.short_lengths: set[int] = set()

    def add_set(self, name: str, items: list[list[str]]) -> None:
        per_item: list[set[str]] = []
        for segments in items:
            grams: set[str] = set()
            for segment in segments:
                tokens = words(segment)
                if len(tokens) < self.min_words:
                    continue
                if len(tokens) < self.n:
                    grams.add(" ".join(tokens))
                    continue
                grams.update(" ".join(tokens[i : i + self.n]) for i in range(len(tokens) - self.n + 1))
            per_item.append(grams)
        frequency = Counter(g for grams in per_item for g in grams)
        limit = BOILERPLATE_SHARE * len(per_item) if len(per_item) >= BOILERPLATE_MIN_ITEMS else float("inf")
        kept = {g for g, count in frequency.items() if count <= limit}
        for gram in kept:
            self.grams[gram].add(name)
            length = gram.count(" ") + 1
            if length < self.n:
                self.short_lengths.add(length)
        self.sets[name] = {"items": len(per_item), "ngrams": len(kept), "boilerplate_ngrams": len(frequency) - len(kept)}

    def matches(self, text: str) -> tuple[Counter, dict[str, str]]:
        tokens = words(text)
        found: Counter = Counter()
        example: dict[str, str] = {}
        seen: set[str] = set()
        for size in (self.n, *sorted(self.short_lengths)):
            for i in range(len(tokens) - size + 1):
                gram = " ".join(tokens[i : i + size])
                if gram in seen or gram not in self.grams:
                    continue
                seen.add(gram)
                for name in self.grams[gram]:
                    found[name] += 1
                    example.setdefault(name, gram)
        return found, example


def build_index(cfg: DecontamConfig) -> NgramIndex:
    index = NgramIndex(cfg.n, cfg.min_words)
    for entry in cfg.eval_sets:
        path = Path(entry)
        items = [item for file in _files(path) for item in read_items(file)]
        # parent/stem: "ceval/test" and "instructions/test" stay apart
        name = f"{path.parent.name}/{path.stem if path.is_file() else path.name}".lstrip("/")
        if name in index.sets:
            name = f"{name}_{len(index.sets)}"
        index.add_set(name, items)
        index.sets[name]["path"] = str(path)
    return index


def decontam_checks(cfg: DecontamConfig) -> list[Check]:
    if not cfg.enabled:
        return []
    index = build_index(cfg)

    def contamination(doc: Document) -> str | None:
        found, example = index.matches(doc.text)
        labels(doc).update(contamination=dict(found), contamination_example=example)
        return "contaminated" if any(count >= cfg.min_matches for count in found.values()) else None

    contamination.index = index  # type: ignore[attr-defined]
    return [contamination]


def summarize(cfg: DecontamConfig, index_sets: dict[str, dict], records: list[dict[str, Any]], examples: int = 3) -> dict:
    """The summary JSON (format in docs/data_cleaning.md) from every checked document's labels."""
    sets = {name: {**info, "documents_contaminated": 0, "matched_ngrams": 0, "examples": []}
            for name, info in index_sets.items()}
    by_source: dict[str, Counter] = defaultdict(Counter)
    checked = flagged = 0
    for record in records:
        doc_labels = record.get("labels", {})
        if "contamination" not in doc_labels:
            continue
        checked += 1
        hits = {k: v for k, v in doc_labels["contamination"].items() if v >= cfg.min_matches}
        flagged += bool(hits)
        for name, count in hits.items():
            entry = sets[name]
            entry["documents_contaminated"] += 1
            entry["matched_ngrams"] += count
            by_source[doc_labels.get("source", "?")][name] += 1
            if len(entry["examples"]) < examples:
                entry["examples"].append({"id": record.get("id"), "source": doc_labels.get("source"),
                                          "ngram": doc_labels.get("contamination_example", {}).get(name)})
    return {"n": cfg.n, "min_matches": cfg.min_matches, "mode": cfg.mode, "documents_checked": checked,
            "documents_contaminated": flagged, "eval_sets": sets,
            "by_source": {source: dict(c) for source, c in sorted(by_source.items())}}
