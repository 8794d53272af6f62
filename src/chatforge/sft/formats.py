"""Read SFT conversations from files in the four common formats, normalised to chat messages.

Formats, detected per record (`format="auto"`, in this order) or forced with `format=...`:

- `messages` (OpenAI): `{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`
- `sharegpt`: `{"conversations": [{"from": "human"|"gpt"|"system", "value": str}, ...], "system"?: str}`
- `alpaca`: `{"instruction": str, "input"?: str, "output": str, "system"?: str, "history"?: [[user, answer], ...]}`;
  the user turn is `instruction + "\\n\\n" + input` (just `instruction` when `input` is empty), and
  `history` holds earlier turns (the LLaMA-Factory convention, which the task world writes).
- `prompt_completion`: `{"prompt": str | [messages], "completion": str | [messages], "system"?: str}`.

Every record becomes a list of `{"role", "content"}` messages: an optional system message first, then
user and assistant turns alternating, starting with a user turn and ending with an answer. Fields the
format does not use (`id`, `task`, `task_type`, `source`, ...) are kept in `Conversation.extra`.

The parsers live in `data.parsers` (one per record kind), the file reading in `data.records`. A
record that fits no format or is malformed is skipped into the `RejectLog` with its file, line and
one of these reasons: `not_utf8`, `bad_json`, `not_an_object`, `unknown_format` (auto found no format's
fields), `missing_field` (the forced format's field is absent), `bad_field` (a field of the wrong type or
shape), `unknown_role`, `empty_content` (empty or blank text), `no_assistant_turn`, `out_of_order`
(system not first, two turns of one role in a row, a first turn that is not the user's, or a last
turn that is not an answer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from chatforge.config.base import StrictModel
from chatforge.data.parsers import ChatFormat, Message, check_messages, detect_format, to_messages
from chatforge.data.records import DataSource, RecordError, read_records
from chatforge.run_dir import RejectLog

__all__ = ["ChatFormat", "ChatSourceConfig", "Conversation", "Message", "RecordError", "SystemPrompts",
           "check_messages", "detect_format", "read_conversation_file", "read_conversations", "to_messages"]


@dataclass(frozen=True)
class Conversation:
    """One training conversation and where it came from."""

    messages: list[Message]  # [{"role", "content"}]: system?, user, assistant, user, assistant, ...
    source: str  # the file
    where: str  # "line 12", "item 3", "row 7"
    extra: dict[str, Any] = field(default_factory=dict)  # the record's other fields (id, task, task_type, ...)


class ChatSourceConfig(DataSource):
    format: ChatFormat = Field(
        "auto", description="record format; auto detects messages, sharegpt, alpaca or prompt_completion per record"
    )


class SystemPrompts(StrictModel):
    """System prompts added to conversations that have none: one per task type, and a default."""

    by_task: dict[str, str] = Field(
        default_factory=dict, description="task type -> system prompt, for conversations without a system message"
    )
    default: str | None = Field(
        None, description="system prompt for the other conversations without one (none added when unset)"
    )
    task_field: str = Field("task_type", description="the record field that names a conversation's task type")

    @field_validator("by_task")
    @classmethod
    def _no_blank_prompts(cls, value: dict[str, str]) -> dict[str, str]:
        blank = [task for task, text in value.items() if not text.strip()]
        if blank:
            raise ValueError(f"blank system prompt for task type(s) {blank}; remove them or give a text")
        return value

    def apply(self, conversation: Conversation) -> Conversation:
        """`conversation` with a system message first, unless it has one or no prompt applies."""
        if conversation.messages[0]["role"] == "system":
            return conversation
        task = conversation.extra.get(self.task_field)
        text = self.by_task.get(task) if isinstance(task, str) else None
        if text is None:
            text = self.default
        if not text:
            return conversation
        messages = [{"role": "system", "content": text}, *conversation.messages]
        return dataclasses.replace(conversation, messages=messages)


def read_conversations(
    sources: list[ChatSourceConfig], rejects: RejectLog, system_prompts: SystemPrompts | None = None
) -> Iterator[Conversation]:
    """Every usable conversation of every source, in order, with `system_prompts` applied."""
    for source in sources:
        for conversation in read_conversation_file(source.path, rejects, source.format, source.split):
            yield system_prompts.apply(conversation) if system_prompts is not None else conversation


def read_conversation_file(
    path: str | Path, rejects: RejectLog, format: ChatFormat = "auto", split: str | None = None
) -> Iterator[Conversation]:
    """The conversations of one file or directory (its .jsonl/.json/.parquet files, sorted; of `split`
    when given) or HF dataset directory (`data.records`).

    Raises `DataError` for a missing path, a directory without such files, or a `.json` array that is
    not valid JSON as a whole. Unusable records go to `rejects`.
    """

    def parse(record: Any, source: str, where: str) -> Conversation:
        messages, extra = to_messages(record, format)
        return Conversation(messages, source, where, extra)

    yield from read_records([DataSource(path=str(path), split=split)], parse, rejects)
