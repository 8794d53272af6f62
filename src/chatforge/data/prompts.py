"""Prompt files: world-style prompt records for the stages that sample (Best-of-N, ReST-EM, online RL).

A record gives its prompt as `prompt` (messages ending with a user turn) or `messages` (ending with a
reference answer, which is dropped); other fields (`task`, `answer`, `id`, ...) are kept for the
checker. The stages name their prompts as sft, rm and dpo name their data (docs/data_formats.md):
`data.sources` are the prompts sampled from (trained on, for rest and the RL stages) and
`data.val_sources` the held-out ones, each a list of `{path, split}` (`PromptSources`: a bare path
is one source). They are read through `data.records.read_records` (JSONL, JSON arrays, Parquet,
directories, HF dataset dirs; one JSON decoder; the reject log).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator

from chatforge.data.records import DataSource
from chatforge.errors import DataError
from chatforge.run_dir import RejectLog

T = TypeVar("T")


def _one_path_is_one_source(value: Any) -> Any:
    # `data.sources=prompts.jsonl` on the command line: the common case of one file, written as a path
    return [{"path": value}] if isinstance(value, str) else value


PromptSources = Annotated[list[DataSource], BeforeValidator(_one_path_is_one_source)]
"""`data.sources` / `data.val_sources` of a prompt stage: `[{path, split}, ...]`, or one path."""

Sources = str | Path | DataSource | Sequence[str | Path | DataSource]


def source_names(sources: Sources) -> str:
    """The paths of `sources`, for messages."""
    items = [sources] if isinstance(sources, str | Path | DataSource) else list(sources)
    return ", ".join(str(s.path if isinstance(s, DataSource) else s) for s in items)


def prompt_records(
    sources: Sources, parse: Callable[[dict, str, str], T | None], rejects: RejectLog, limit: int | None = None,
) -> list[T]:
    """parse(record, source file, where) of the JSON objects of `sources`, in order, at most `limit`
    of them. A record that is not an object goes to `rejects` (`not_an_object`), as does one whose
    parse raises `RecordError`; a parse that returns None skips the record without a reject.
    `DataError` ("prompts file not found: PATH") for a source that does not exist."""
    from chatforge.data.records import RecordError, read_records

    items = [sources] if isinstance(sources, str | Path | DataSource) else list(sources)

    def parse_object(record: Any, source: str, where: str) -> T | None:
        if not isinstance(record, dict):
            raise RecordError("not_an_object", f"expected a JSON object, got {type(record).__name__}")
        return parse(record, source, where)

    out: list[T] = []
    if limit is not None and limit < 1:
        return out
    for item in read_records(items, parse_object, rejects, missing="prompts file not found"):
        if item is None:
            continue
        out.append(item)
        if limit is not None and len(out) >= limit:
            break
    return out


def load_prompts(sources: Sources, limit: int | None, rejects: RejectLog, tasks: list[str] | None = None) -> list[dict]:
    """World-style prompt records of `sources`: `prompt` (messages ending with a user turn) or `messages`
    (ending with a reference answer, dropped), plus `task` and `answer` for the checker; each gets `id`
    (its own, else FILE:LINE). With `tasks`, records of other tasks are skipped (not rejected) and
    `limit` counts the kept ones."""
    from chatforge.data.parsers import prompt_messages
    from chatforge.data.records import RecordError

    seen_tasks: set[str] = set()

    def parse(record: dict, source: str, where: str) -> dict | None:
        try:
            messages = None if isinstance(record.get("prompt"), str) else prompt_messages(record)
        except RecordError:
            messages = None
        if not messages or messages[-1].get("role") != "user":
            raise RecordError("bad_field", "needs `prompt` (messages ending with a user turn) or `messages`")
        seen_tasks.add(str(record.get("task")))
        if tasks is not None and record.get("task") not in tasks:
            return None
        lineno = where.removeprefix("line ")
        return {**record, "prompt": messages, "id": str(record.get("id", f"{Path(source).name}:{lineno}"))}

    records = prompt_records(sources, parse, rejects, limit)
    names = source_names(sources)
    if not records and tasks is not None and seen_tasks:
        raise DataError(f"no prompts of tasks {tasks} in {names} (its tasks: {', '.join(sorted(seen_tasks))})")
    if not records:
        raise DataError(f"no usable prompts in {names} ({rejects.summary_line()})")
    return records
