"""What every task kind gets: the model under evaluation (loaded once, lazily), its device and the reject log.

A task module exposes a config class (a `StrictModel` with a `kind` literal) and
`run(ctx, cfg) -> {"metrics": {name: float}, "details": {...}}`; the metrics are the table's rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.errors import DataError
from chatforge.run_dir import RejectLog


class TaskBase(StrictModel):
    name: str | None = Field(None, description="the task's label in the table and eval.json (default: its kind, numbered if repeated)")

    def check(self) -> None:
        """Rules between fields that the task would otherwise find only when it runs: ConfigError
        `FIELD: ...`. Called by `run_suite` before the first model loads and by the recipe preflight
        (`chatforge run --dry-run`) before the first stage; a kind without rules has none."""


@dataclass
class ModelContext:
    path: str
    device: str
    rejects: RejectLog
    tokenizer_path: str | None = None
    _model: Any = field(default=None, repr=False)
    _tokenizer: Any = field(default=None, repr=False)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from chatforge.tokenizer.load import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_path or self.path)
        return self._tokenizer

    @property
    def model(self):
        """The causal LM in eval mode on `device` (not loaded for reward-model-only suites)."""
        if self._model is None:
            from chatforge.models.build import load_pretrained

            self._model = load_pretrained(self.path).to(self.device).eval()
        return self._model

    def release(self) -> None:
        self._model = None


def jsonl_task_records(path: str | Path, rejects: RejectLog, limit: int | None = None, asks: bool = False) -> list[dict]:
    """The JSON objects of a JSONL file in order (at most `limit`), each with `_where` (path:line); lines
    that are not JSON objects go to `rejects`, and with `asks` so do records that ask nothing (no
    `prompt` or `messages`: `prompt_of` would fail), each with its line. Possibly empty."""
    from chatforge.data.parsers import prompt_messages
    from chatforge.data.records import jsonl_objects

    def parse(record: dict, source: str, where: str) -> dict:
        if asks:
            prompt_messages(record)  # RecordError (bad_field) -> rejects, counted with its line
        record.setdefault("_where", f"{path}:{where.removeprefix('line ')}")
        return record

    return jsonl_objects(path, parse, rejects, "file", limit)


def read_jsonl(path: str | Path, rejects: RejectLog, limit: int | None = None, asks: bool = False) -> list[dict]:
    """`jsonl_task_records`, or DataError when no record is usable. The tasks that prompt the model
    (generation, judge) read with `asks`, and so does the recipe preflight, which reads their files."""
    records = jsonl_task_records(path, rejects, limit, asks)
    if not records:
        raise DataError(f"{path}: no usable records ({rejects.summary_line()})")
    return records


def prompt_of(record: dict) -> list[dict]:
    """The chat messages a record asks: `prompt` (messages or a string) or `messages` minus a final answer."""
    from chatforge.scoring.base import prompt_messages

    return prompt_messages(record)


def question_text(messages: list[dict]) -> str:
    """What a judge is shown as the question: the conversation's user turns (and the system prompt)."""
    parts = [f"{m['role']}: {m['content']}" if m["role"] != "user" else m["content"] for m in messages]
    return "\n".join(parts) if len(messages) > 1 else messages[0]["content"]
