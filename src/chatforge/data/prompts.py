"""Prompt files: world-style prompt records for the stages that sample (ReST-EM, online RL).

A record gives its prompt as `prompt` (messages ending with a user turn) or `messages` (ending with a
reference answer, which is dropped); other fields (`task`, `answer`, `id`, ...) are kept for the
checker. Read through `data.records.jsonl_objects` (one JSON decoder, the reject log).
"""

from __future__ import annotations

from pathlib import Path

from chatforge.errors import DataError
from chatforge.run_dir import RejectLog


def load_prompts(path: str, limit: int | None, rejects: RejectLog, tasks: list[str] | None = None) -> list[dict]:
    """World-style prompt records: `prompt` (messages ending with a user turn) or `messages` (ending
    with a reference answer, dropped), plus `task` and `answer` for the checker; each gets `id`.
    With `tasks`, records of other tasks are skipped (not rejected) and `limit` counts the kept ones."""
    from chatforge.data.parsers import prompt_messages
    from chatforge.data.records import RecordError, jsonl_objects

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
        return {**record, "prompt": messages, "id": str(record.get("id", f"{Path(path).name}:{lineno}"))}

    records = jsonl_objects(path, parse, rejects, "prompts file", limit)
    if not records and tasks is not None and seen_tasks:
        raise DataError(f"no prompts of tasks {tasks} in {path} (its tasks: {', '.join(sorted(seen_tasks))})")
    if not records:
        raise DataError(f"no usable prompts in {path} ({rejects.summary_line()})")
    return records
