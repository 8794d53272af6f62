"""Read documents from text, JSONL, Parquet, Hugging Face dataset directories or a built-in corpus.

Every record that cannot be used (undecodable bytes, bad JSON, missing or non-string text field,
empty text) is skipped with its file, line and reason into the `RejectLog`; nothing is lost silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.data.builtin import builtin_documents
from chatforge.data.records import jsonl_records
from chatforge.errors import DataError
from chatforge.run_dir import RejectLog

Format = Literal["auto", "text", "jsonl", "parquet", "hf"]


class SourceConfig(StrictModel):
    path: str = Field(description="file, directory of files, HF dataset dir (save_to_disk), or builtin:NAME")
    format: Format = Field("auto", description="auto detects from the suffix: .txt/.md text, .jsonl/.json, .parquet")
    text_field: str = Field("text", description="field that holds the document text (JSONL, Parquet, HF)")
    text_split: Literal["file", "blank_line", "line"] = Field(
        "blank_line", description="for plain text: one document per file, per blank-line block, or per line"
    )
    weight: float = Field(1.0, gt=0, description="sampling weight of this source in a mixture")
    name: str | None = Field(None, description="name in mixtures, stages and logs (default: the file name stem)")
    content: Literal["text", "chat"] = Field(
        "text", description="text: a text field; chat: OpenAI `messages` rendered with the tokenizer's chat template"
    )
    messages_field: str = Field("messages", description="field that holds the conversation when content is chat")


@dataclass(frozen=True)
class Document:
    text: str  # for a chat record: "" until rendered with a chat template
    source: str
    where: str  # "line 12", "row 7", "section 3": enough to find the record again
    messages: list[dict[str, str]] | None = None  # a chat record's conversation

_ROLES = ("system", "user", "assistant", "tool")


_SUFFIX_FORMAT = {".txt": "text", ".md": "text", ".text": "text", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def read_documents(sources: list[SourceConfig], rejects: RejectLog) -> Iterator[Document]:
    """Yield every usable document of every source, in order."""
    for source in sources:
        yield from _read_source(source, rejects)


def _read_source(source: SourceConfig, rejects: RejectLog) -> Iterator[Document]:
    if source.path.startswith("builtin:"):
        name = source.path.split(":", 1)[1]
        for i, text in enumerate(builtin_documents(name)):
            yield Document(text, source.path, f"section {i}")
        return
    path = Path(source.path)
    if not path.exists():
        raise DataError(f"input not found: {path}")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            yield from _read_hf_dir(path, source, rejects)
            return
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _SUFFIX_FORMAT)
        if not files:
            raise DataError(f"input directory {path} holds no .txt/.md/.jsonl/.json/.parquet files")
        for file in files:
            yield from _read_file(file, source, rejects)
        return
    yield from _read_file(path, source, rejects)


def _read_file(path: Path, source: SourceConfig, rejects: RejectLog) -> Iterator[Document]:
    fmt = source.format if source.format != "auto" else _SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; set format: text|jsonl|parquet")
    if fmt == "text" and source.content == "chat":
        raise DataError(f"{path}: content: chat needs JSONL, Parquet or a dataset directory, not plain text")
    if fmt == "text":
        yield from _read_text(path, source, rejects)
    elif fmt == "jsonl":
        yield from _read_jsonl(path, source, rejects)
    elif fmt == "parquet":
        yield from _read_parquet(path, source, rejects)
    else:
        raise DataError(f"{path}: format 'hf' needs a dataset directory written by save_to_disk")


def _read_text(path: Path, source: SourceConfig, rejects: RejectLog) -> Iterator[Document]:
    name = str(path)
    block: list[str] = []
    block_start = 1

    def flush() -> Iterator[Document]:
        text = "\n".join(block).strip()
        if text:
            yield Document(text, name, f"line {block_start}")

    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                rejects.add(name, f"line {lineno}", "not_utf8", f"invalid byte at column {exc.start + 1}", raw[:200].hex())
                continue
            if source.text_split == "line":
                if line.strip():
                    yield Document(line.strip(), name, f"line {lineno}")
            elif source.text_split == "blank_line" and not line.strip():
                yield from flush()
                block, block_start = [], lineno + 1
            else:
                if not block:
                    block_start = lineno
                block.append(line)
    yield from flush()


def _read_jsonl(path: Path, source: SourceConfig, rejects: RejectLog) -> Iterator[Document]:
    name = str(path)
    for where, record in jsonl_records(path, rejects):
        if source.content == "chat":
            messages = _messages_of(record, source.messages_field, name, where, rejects)
            if messages is not None:
                yield Document("", name, where, messages)
            continue
        text = _text_of(record, source.text_field, name, where, rejects)
        if text is not None:
            yield Document(text, name, where)


def _messages_of(record: object, field: str, name: str, where: str, rejects: RejectLog) -> list | None:
    if not isinstance(record, dict):
        rejects.add(name, where, "not_an_object", f"expected a JSON object, got {type(record).__name__}", record)
        return None
    messages = record.get(field)
    if not isinstance(messages, list) or not messages:
        found = "missing" if field not in record else f"a {type(messages).__name__}"
        rejects.add(name, where, "bad_messages", f"field {field!r} is {found}, expected a non-empty list", record)
        return None
    for i, message in enumerate(messages):
        if not (isinstance(message, dict) and message.get("role") in _ROLES and isinstance(message.get("content"), str)):
            rejects.add(
                name, where, "bad_messages",
                f"{field}[{i}] needs a role in {_ROLES} and a string content, got {str(message)[:80]}", record,
            )
            return None
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _text_of(record: object, field: str, name: str, where: str, rejects: RejectLog) -> str | None:
    if not isinstance(record, dict):
        rejects.add(name, where, "not_an_object", f"expected a JSON object, got {type(record).__name__}", record)
        return None
    if field not in record:
        rejects.add(name, where, "missing_field", f"no field {field!r} (fields: {', '.join(map(str, record))})", record)
        return None
    text = record[field]
    if not isinstance(text, str):
        rejects.add(name, where, "field_not_text", f"field {field!r} is {type(text).__name__}", record)
        return None
    if not text.strip():
        rejects.add(name, where, "empty_text", f"field {field!r} is empty", record)
        return None
    return text


def _read_parquet(path: Path, source: SourceConfig, rejects: RejectLog) -> Iterator[Document]:
    from datasets import Dataset

    try:
        ds = Dataset.from_parquet(str(path))
    except Exception as exc:  # pyarrow raises many types; the message is what the user needs
        raise DataError(f"{path}: cannot read as Parquet: {exc}") from None
    yield from _read_dataset(ds, str(path), source, rejects)


def _read_hf_dir(path: Path, source: SourceConfig, rejects: RejectLog) -> Iterator[Document]:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        if "train" not in ds:
            raise DataError(f"{path}: dataset dict has splits {list(ds)}, expected a 'train' split")
        ds = ds["train"]
    yield from _read_dataset(ds, str(path), source, rejects)


def _read_dataset(ds, name: str, source: SourceConfig, rejects: RejectLog) -> Iterator[Document]:
    if source.content == "chat":
        if source.messages_field not in ds.column_names:
            raise DataError(f"{name}: no column {source.messages_field!r} (columns: {', '.join(ds.column_names)})")
        for row, messages in enumerate(ds[source.messages_field]):
            field = source.messages_field
            checked = _messages_of({field: messages}, field, name, f"row {row}", rejects)
            if checked is not None:
                yield Document("", name, f"row {row}", checked)
        return
    if source.text_field not in ds.column_names:
        raise DataError(f"{name}: no column {source.text_field!r} (columns: {', '.join(ds.column_names)}); set text_field")
    for row, text in enumerate(ds[source.text_field]):
        where = f"row {row}"
        if not isinstance(text, str):
            rejects.add(name, where, "field_not_text", f"column {source.text_field!r} is {type(text).__name__}")
        elif not text.strip():
            rejects.add(name, where, "empty_text", f"column {source.text_field!r} is empty")
        else:
            yield Document(text, name, where)
