"""What each step saw, kept and dropped, per shard; and the side output of every dropped document.

Nothing is lost: a dropped (or unreadable) document is written whole, with its step and reason, to
`dropped/<shard>.jsonl`. The counts and a few examples per reason go to `counts/<shard>.json` when
the shard finishes; both are written under a temporary name and renamed, so a shard that dies
midway leaves nothing that looks finished and is simply run again.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from datatrove.data import Document

PREVIEW_CHARS = 300


def doc_record(doc: Document) -> dict[str, Any]:
    """A document as one JSON object: text, id and every metadata field (labels, verdicts, url...)."""
    return {"id": doc.id, "text": doc.text, **doc.metadata}


def record_doc(record: dict[str, Any]) -> Document:
    record = dict(record)
    text, doc_id = record.pop("text"), record.pop("id")
    return Document(text=text, id=doc_id, metadata=record)


def json_line(record: dict[str, Any]) -> str:
    line = json.dumps(record, ensure_ascii=False, default=str)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a broken page: keep it as its JSON escape
        line = "".join(f"\\u{ord(c):04x}" if "\ud800" <= c <= "\udfff" else c for c in line)
    return line + "\n"


class Ledger:
    """Counts per step (`seen`, `kept`, dropped per reason) and examples, for one shard at a time."""

    def __init__(self, root: str | Path, examples_per_reason: int = 3):
        self.root = Path(root)
        self.examples_per_reason = examples_per_reason
        self.shard: str | None = None
        self._dropped = None
        self.counts: dict[str, dict[str, Any]] = {}
        self.examples: dict[str, dict[str, list[dict]]] = {}

    # A ledger is copied into each worker process; the open file handle must not travel with it.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_dropped"] = None
        return state

    def open(self, shard: str) -> None:
        self.close_files()
        self.shard = shard
        self.counts = {}
        self.examples = {}
        (self.root / "dropped").mkdir(parents=True, exist_ok=True)
        self._dropped = (self.root / "dropped" / f"{shard}.jsonl.tmp").open("w", encoding="utf-8")

    def _step(self, step: str) -> dict[str, Any]:
        if step not in self.counts:
            self.counts[step] = {"seen": 0, "kept": 0, "dropped": defaultdict(int)}
        return self.counts[step]

    def seen(self, step: str) -> None:
        self._step(step)["seen"] += 1

    def kept(self, step: str) -> None:
        self._step(step)["kept"] += 1

    def drop(self, step: str, reason: str, doc: Document, detail: str = "") -> None:
        self._step(step)["dropped"][reason] += 1
        record = {**doc_record(doc), "dropped_at": step, "reason": reason}
        if detail:
            record["detail"] = detail
        self._dropped.write(json_line(record))
        examples = self.examples.setdefault(step, {}).setdefault(reason, [])
        if len(examples) < self.examples_per_reason:
            examples.append({"id": doc.id, "url": doc.metadata.get("url"), "detail": detail,
                             "preview": doc.text[:PREVIEW_CHARS]})

    def close_files(self) -> None:
        if self._dropped is not None:
            self._dropped.close()
            self._dropped = None

    def finish(self) -> None:
        """Write the shard's counts and publish its side output (both atomically)."""
        self.close_files()
        counts = {step: {**c, "dropped": dict(c["dropped"])} for step, c in self.counts.items()}
        (self.root / "counts").mkdir(parents=True, exist_ok=True)
        target = self.root / "counts" / f"{self.shard}.json"
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"counts": counts, "examples": self.examples}, ensure_ascii=False, indent=1))
        os.replace(self.root / "dropped" / f"{self.shard}.jsonl.tmp", self.root / "dropped" / f"{self.shard}.jsonl")
        os.replace(tmp, target)


def merge_counts(paths: list[Path], examples_per_reason: int = 3) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, list]]]:
    """Sum the counts of every shard's `counts/*.json`; keep the first examples per reason."""
    counts: dict[str, dict[str, Any]] = {}
    examples: dict[str, dict[str, list]] = {}
    for path in paths:
        data = json.loads(path.read_text())
        for step, c in data["counts"].items():
            total = counts.setdefault(step, {"seen": 0, "kept": 0, "dropped": {}})
            total["seen"] += c["seen"]
            total["kept"] += c["kept"]
            for reason, n in c["dropped"].items():
                total["dropped"][reason] = total["dropped"].get(reason, 0) + n
        for step, by_reason in data["examples"].items():
            for reason, items in by_reason.items():
                kept = examples.setdefault(step, {}).setdefault(reason, [])
                kept.extend(items[: max(0, examples_per_reason - len(kept))])
    return counts, examples
