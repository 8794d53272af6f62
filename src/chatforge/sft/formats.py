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

A record that fits no format or is malformed is skipped into the `RejectLog` with its file, line and
one of these reasons: `not_utf8`, `bad_json`, `not_an_object`, `unknown_format` (auto found no format's
fields), `missing_field` (the forced format's field is absent), `bad_field` (a field of the wrong type or
shape), `unknown_role`, `empty_content` (empty or blank text), `no_assistant_turn`, `out_of_order`
(system not first, two turns of one role in a row, a first turn that is not the user's, or a last
turn that is not an answer).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from chatforge.config.base import StrictModel
from chatforge.data.corpus import jsonl_records
from chatforge.errors import DataError
from chatforge.run_dir import RejectLog

ChatFormat = Literal["auto", "messages", "sharegpt", "alpaca", "prompt_completion"]
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}
ALPACA_INPUT_SEPARATOR = "\n\n"  # instruction + separator + input is the user turn
_SUFFIXES = (".jsonl", ".json", ".parquet")

Message = dict[str, str]


@dataclass(frozen=True)
class Conversation:
    """One training conversation and where it came from."""

    messages: list[Message]  # [{"role", "content"}]: system?, user, assistant, user, assistant, ...
    source: str  # the file
    where: str  # "line 12", "item 3", "row 7"
    extra: dict[str, Any] = field(default_factory=dict)  # the record's other fields (id, task, task_type, ...)


class RecordError(ValueError):
    """A record that cannot be used; `reason` is the reject reason, `detail` says what is wrong."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ChatSourceConfig(StrictModel):
    path: str = Field(description="a .jsonl / .json / .parquet file, a directory of them, or an HF dataset dir")
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
        for conversation in read_conversation_file(source.path, rejects, source.format):
            yield system_prompts.apply(conversation) if system_prompts is not None else conversation


def read_conversation_file(path: str | Path, rejects: RejectLog, format: ChatFormat = "auto") -> Iterator[Conversation]:
    """The conversations of one file or directory (its .jsonl/.json/.parquet files, sorted).

    Raises `DataError` for a missing path, a directory without such files, or a `.json` array that is
    not valid JSON as a whole. Unusable records go to `rejects`.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"input not found: {path}")
    if path.is_dir() and not (path / "dataset_info.json").exists() and not (path / "dataset_dict.json").exists():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _SUFFIXES)
        if not files:
            raise DataError(f"input directory {path} holds no .jsonl/.json/.parquet files")
        for file in files:
            yield from read_conversation_file(file, rejects, format)
        return
    name = str(path)
    for where, record in _records(path, rejects):
        try:
            messages, extra = to_messages(record, format)
        except RecordError as exc:
            rejects.add(name, where, exc.reason, exc.detail, record)
            continue
        yield Conversation(messages, name, where, extra)


def _records(path: Path, rejects: RejectLog) -> Iterator[tuple[str, Any]]:
    """(where, record) of a file; undecodable and bad-JSON lines go to `rejects`."""
    if path.is_dir() or path.suffix.lower() == ".parquet":
        yield from _dataset_records(path)
        return
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if path.suffix.lower() == ".json" and head.startswith(b"["):
        try:
            items = json.loads(path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not a valid JSON array: {exc}") from None
        for i, item in enumerate(items):
            yield f"item {i}", item
        return
    yield from jsonl_records(path, rejects)


def _dataset_records(path: Path) -> Iterator[tuple[str, Any]]:
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        ds = Dataset.from_parquet(str(path)) if path.is_file() else load_from_disk(str(path))
    except Exception as exc:  # pyarrow and datasets raise many types; the message is what the user needs
        raise DataError(f"{path}: cannot read: {exc}") from None
    if isinstance(ds, DatasetDict):
        if "train" not in ds:
            raise DataError(f"{path}: dataset dict has splits {list(ds)}, expected a 'train' split")
        ds = ds["train"]
    for row, record in enumerate(ds):
        # Parquet gives every row every column; a missing optional field reads as None.
        yield f"row {row}", {k: v for k, v in record.items() if v is not None}


def detect_format(record: dict[str, Any]) -> str | None:
    """The format whose fields `record` has (checked in the order of the module docstring), or None."""
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    return None


def to_messages(record: Any, format: ChatFormat = "auto") -> tuple[list[Message], dict[str, Any]]:
    """(messages, extra) of one record: checked messages and the fields the format did not use.

    Raises `RecordError` (reason + detail) when the record fits no format or is malformed.
    """
    if not isinstance(record, dict):
        raise RecordError("not_an_object", f"expected a JSON object, got {type(record).__name__}")
    fmt = detect_format(record) if format == "auto" else format
    if fmt is None:
        raise RecordError(
            "unknown_format",
            f"no messages, conversations, instruction+output or prompt+completion field (fields: {', '.join(map(str, record))})",
        )
    messages, used = _CONVERTERS[fmt](record)
    check_messages(messages)
    return messages, {k: v for k, v in record.items() if k not in used}


def check_messages(messages: list[Message]) -> None:
    """Raise `RecordError` unless `messages` is: system?, then user/assistant alternating, ending with an answer."""
    for i, message in enumerate(messages):
        if message["role"] not in ROLES:
            raise RecordError("unknown_role", f"turn {i} has role {message['role']!r}; expected one of {ROLES}")
        if not message["content"].strip():
            raise RecordError("empty_content", f"turn {i} ({message['role']}) has empty content")
    if not any(m["role"] == "assistant" for m in messages):
        raise RecordError("no_assistant_turn", "the conversation has no assistant turn to train on")
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    offset = len(messages) - len(turns)
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise RecordError(
                "out_of_order",
                f"turn {i + offset} is {message['role']!r}, expected {expected!r} "
                "(system first, then user and assistant alternating)",
            )
    if turns[-1]["role"] != "assistant":
        raise RecordError("out_of_order", f"the last turn ({len(messages) - 1}) is a user turn with no answer")


def _role_content_list(value: Any, name: str) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise RecordError("bad_field", f"field {name!r} is {_kind(value)}, expected a non-empty list of messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise RecordError("bad_field", f"{name}[{i}] needs 'role' and 'content', got {str(message)[:80]}")
        out.append({"role": _text(message["role"], f"{name}[{i}].role"), "content": _text(message["content"], f"{name}[{i}].content")})
    return out


def _from_messages(record: dict[str, Any]) -> tuple[list[Message], set[str]]:
    _require(record, "messages")
    return _role_content_list(record["messages"], "messages"), {"messages"}


def _from_sharegpt(record: dict[str, Any]) -> tuple[list[Message], set[str]]:
    _require(record, "conversations")
    turns = record["conversations"]
    if not isinstance(turns, list) or not turns:
        raise RecordError("bad_field", f"field 'conversations' is {_kind(turns)}, expected a non-empty list")
    messages = _system(record)
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise RecordError("bad_field", f"conversations[{i}] needs 'from' and 'value', got {str(turn)[:80]}")
        speaker = _text(turn["from"], f"conversations[{i}].from")
        if speaker not in SHAREGPT_ROLES:
            raise RecordError(
                "unknown_role", f"conversations[{i}] is from {speaker!r}; expected one of {tuple(SHAREGPT_ROLES)}"
            )
        messages.append({"role": SHAREGPT_ROLES[speaker], "content": _text(turn["value"], f"conversations[{i}].value")})
    return messages, {"conversations", "system"}


def _from_alpaca(record: dict[str, Any]) -> tuple[list[Message], set[str]]:
    _require(record, "instruction")
    _require(record, "output")
    messages = _system(record)
    history = record.get("history") or []
    if not isinstance(history, list):
        raise RecordError("bad_field", f"field 'history' is {_kind(history)}, expected a list of [user, answer] pairs")
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise RecordError("bad_field", f"history[{i}] is not a [user, answer] pair: {str(pair)[:80]}")
        messages.append({"role": "user", "content": _text(pair[0], f"history[{i}][0]")})
        messages.append({"role": "assistant", "content": _text(pair[1], f"history[{i}][1]")})
    parts = [_text(record["instruction"], "instruction"), _optional_text(record, "input")]
    user = ALPACA_INPUT_SEPARATOR.join(p for p in parts if p.strip())
    messages.append({"role": "user", "content": user})
    messages.append({"role": "assistant", "content": _text(record["output"], "output")})
    return messages, {"instruction", "input", "output", "system", "history"}


def _from_prompt_completion(record: dict[str, Any]) -> tuple[list[Message], set[str]]:
    _require(record, "prompt")
    _require(record, "completion")
    prompt, completion = record["prompt"], record["completion"]
    messages = _system(record)
    if isinstance(prompt, str):
        messages.append({"role": "user", "content": prompt})
    else:
        messages += _role_content_list(prompt, "prompt")
    if isinstance(completion, str):
        messages.append({"role": "assistant", "content": completion})
    else:
        answers = _role_content_list(completion, "completion")
        if any(m["role"] != "assistant" for m in answers):
            raise RecordError("bad_field", "field 'completion' may hold only assistant messages")
        messages += answers
    return messages, {"prompt", "completion", "system"}


_CONVERTERS = {
    "messages": _from_messages,
    "sharegpt": _from_sharegpt,
    "alpaca": _from_alpaca,
    "prompt_completion": _from_prompt_completion,
}


def _system(record: dict[str, Any]) -> list[Message]:
    """The optional top-level `system` field as a message list ([] when absent or empty)."""
    text = _optional_text(record, "system")
    return [{"role": "system", "content": text}] if text.strip() else []


def _require(record: dict[str, Any], name: str) -> None:
    if name not in record:
        raise RecordError("missing_field", f"no field {name!r} (fields: {', '.join(map(str, record))})")


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise RecordError("bad_field", f"{name} is {_kind(value)}, expected a string")
    return value


def _optional_text(record: dict[str, Any], name: str) -> str:
    """An optional text field: "" when absent or null."""
    value = record.get(name)
    return "" if value is None else _text(value, name)


_JSON_KINDS = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}


def _kind(value: Any) -> str:
    """A value's kind in JSON words ("a list", "null"), for messages about records."""
    return "null" if value is None else _JSON_KINDS.get(type(value), f"a {type(value).__name__}")
