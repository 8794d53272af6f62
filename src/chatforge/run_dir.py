"""The run directory every stage writes, and the side file of skipped records.

runs/<name>/
  config.yaml      resolved config, every default filled in
  metrics.jsonl    one JSON object per logged step
  checkpoints/     resumable state, atomic writes
  final/           Hugging Face format, the next stage's input
  report/          PNG plots and summary.json
  rejected.jsonl   every input record skipped or altered, with the reason
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from chatforge.config.load import dump_config


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def create(cls, root: str | Path) -> RunDir:
        run = cls(Path(root))
        for sub in (run.root, run.checkpoints, run.report):
            sub.mkdir(parents=True, exist_ok=True)
        return run

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected.jsonl"

    @property
    def summary(self) -> Path:
        return self.report / "summary.json"

    def write_config(self, cfg: BaseModel) -> None:
        self.config_path.write_text(dump_config(cfg), encoding="utf-8")

    def write_summary(self, summary: dict[str, Any]) -> None:
        existing = json.loads(self.summary.read_text()) if self.summary.exists() else {}
        existing.update(summary)
        self.summary.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _preview(record: Any, chars: int) -> str:
    if isinstance(record, str):
        return record[:chars]
    try:
        return json.dumps(record, ensure_ascii=False, default=str)[:chars]
    except (ValueError, TypeError, RecursionError):  # circular, or too deep for the encoder
        pass
    try:
        return repr(record)[:chars]
    except RecursionError:
        return f"<a {type(record).__name__} nested too deep to show>"


# Characters `str.splitlines` breaks lines at that JSON leaves unescaped: written as escapes, so
# a reader that splits the log into lines gets one entry per line.
_LINE_BREAKS = {ord(c): f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029"}


def _jsonl_line(entry: dict[str, Any]) -> str:
    """One JSON line, readable (non-ASCII kept) and always UTF-8-encodable: a lone surrogate, which
    UTF-8 cannot hold, is written as its `\\udXXX` escape (JSON's own spelling of it)."""
    line = json.dumps(entry, ensure_ascii=False).translate(_LINE_BREAKS)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = "".join(f"\\u{ord(c):04x}" if "\ud800" <= c <= "\udfff" else c for c in line)
    return line + "\n"


class RejectLog:
    """Counts skipped (or altered) records by reason and writes each one to `rejected.jsonl`.

    Nothing a reader or filter drops is lost: the side file keeps where it came from, why, and a
    preview of the record.
    """

    PREVIEW_CHARS = 200

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.counts: Counter[str] = Counter()
        self._fh = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w", encoding="utf-8")

    def add(self, source: str, where: str | int, reason: str, detail: str = "", record: Any = None) -> None:
        """Count and write one skipped record. Never raises for what the record holds: the log is where
        hostile input goes, so it must take any of it (lone surrogates, deep nesting, odd types)."""
        self.counts[reason] += 1
        if self._fh is None:
            return
        entry: dict[str, Any] = {"source": str(source), "where": where if isinstance(where, int) else str(where),
                                 "reason": str(reason)}
        if detail:
            entry["detail"] = str(detail)
        if record is not None:
            entry["preview"] = _preview(record, self.PREVIEW_CHARS)
        self._fh.write(_jsonl_line(entry))
        self._fh.flush()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary_line(self) -> str:
        if not self.counts:
            return "no records skipped"
        parts = ", ".join(f"{reason}: {n}" for reason, n in self.counts.most_common())
        where = f" (see {self.path})" if self.path else ""
        return f"{self.total} records skipped or altered: {parts}{where}"

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RejectLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
