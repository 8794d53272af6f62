"""Read HTML directories, WARC files, JSONL, Parquet and HF dataset dirs into datatrove Documents.

Records are numbered across all inputs in order; shard `rank` of `world_size` takes the records
whose number is `rank` modulo `world_size`, so any number of shards covers every record exactly
once, and the number (`order`) lets the final phase restore the input order (dedup keeps the first
copy). What cannot be read is never fatal: invalid JSON lines, non-object records, missing or
non-text fields, undecodable bytes, empty pages and truncated WARC files are counted under the
`read` step and kept whole in the side output.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from chatforge.clean.config import InputConfig
from chatforge.clean.ledger import Ledger
from chatforge.errors import DataError

STEP = "read"
_HTML_SUFFIXES = (".html", ".htm", ".xhtml")
_WARC_SUFFIXES = (".warc", ".warc.gz", ".arc", ".arc.gz")
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


class Malformed(Exception):
    """A record that cannot become a document; `raw` is what was read of it."""

    def __init__(self, reason: str, raw: Any, detail: str = ""):
        super().__init__(reason)
        self.reason, self.raw, self.detail = reason, raw, detail


def _format_of(path: Path, cfg: InputConfig) -> str:
    if cfg.format != "auto":
        return cfg.format
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return "hf"
        return "dir"
    name = path.name.lower()
    for fmt, suffixes in (("html", _HTML_SUFFIXES), ("warc", _WARC_SUFFIXES), ("jsonl", _JSONL_SUFFIXES),
                          ("parquet", (".parquet",))):
        if name.endswith(suffixes):
            return fmt
    raise DataError(f"{path}: cannot tell the format from the name; set format (html, warc, jsonl, parquet, hf)")


def expand(cfg: InputConfig) -> list[tuple[Path, str]]:
    """(file, format) pairs of one input, in a stable order."""
    path = Path(cfg.path)
    if not path.exists():
        raise DataError(f"input not found: {path}")
    fmt = _format_of(path, cfg)
    if fmt != "dir":
        return [(path, fmt)]
    found = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        try:
            found.append((file, _format_of(file, cfg.model_copy(update={"format": "auto"}))))
        except DataError:
            continue  # a README or an image beside the pages
    if not found:
        raise DataError(f"input directory {path} holds no .html, .warc(.gz), .jsonl or .parquet files")
    return found


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed("undecodable", data[:2000].decode("utf-8", "replace"), f"{where}: {exc.reason} at byte {exc.start}") from None


def _records_html(path: Path) -> Iterator[tuple[str, Any]]:
    data = path.read_bytes()
    yield "file", {"html": data, "url": None, "id": path.name}


def _records_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            yield f"line {number}", raw


def _records_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # not a Parquet file at all
        raise Malformed("unreadable_file", str(path), f"{type(exc).__name__}: {exc}") from None
    row = 0
    for batch in table.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            yield f"row {row}", record
            row += 1


def _records_hf(path: Path) -> Iterator[tuple[str, Any]]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("", loaded)]
    for split, ds in splits:
        for row, record in enumerate(ds):
            yield (f"{split} row {row}" if split else f"row {row}"), record


def _records_warc(path: Path) -> Iterator[tuple[str, Any]]:
    from warcio.archiveiterator import ArchiveIterator

    with path.open("rb") as fh:
        iterator = iter(ArchiveIterator(fh))
        number = 0
        while True:
            try:
                record = next(iterator)
                if record.rec_type not in ("response", "resource", "conversion"):
                    continue
                number += 1
                content_type = record.http_headers.get_header("Content-Type", "") if record.http_headers else ""
                if content_type and "html" not in content_type and "text" not in content_type:
                    continue
                body = record.content_stream().read()
                header_bytes = record.http_headers.total_len if record.http_headers else 0
                if len(body) < record.length - header_bytes:  # the archive broke off inside this record
                    raise Malformed("truncated_warc", body.decode("utf-8", "replace"),
                                    f"{path.name} record {number}: {len(body)} of {record.length - header_bytes} bytes")
                yield f"record {number}", {
                    "html": body,
                    "url": record.rec_headers.get_header("WARC-Target-URI"),
                    "id": record.rec_headers.get_header("WARC-Record-ID") or f"{path.name}#{number}",
                    "timestamp": record.rec_headers.get_header("WARC-Date"),
                }
            except StopIteration:
                return
            except Malformed:
                raise
            except Exception as exc:  # a truncated or corrupt archive: what came before is kept
                raise Malformed("truncated_warc", str(path), f"after record {number}: {type(exc).__name__}: {exc}") from None


_READERS = {"html": _records_html, "jsonl": _records_jsonl, "parquet": _records_parquet, "hf": _records_hf,
            "warc": _records_warc}


def _looks_like_html(text: str) -> bool:
    head = text.lstrip()[:200].lower()
    return head.startswith(("<!doctype html", "<html", "<head", "<body")) or "<html" in head


def to_document(raw: Any, fmt: str, cfg: InputConfig, source: str, where: str, order: int) -> Document:
    """One raw record as a Document, or `Malformed` with the reason."""
    if fmt == "jsonl":
        text_line = _decode(raw, where).lstrip("\ufeff")  # a byte-order mark before the first record
        if not text_line.strip():
            raise Malformed("empty", text_line, "blank line")
        try:
            raw = json.loads(text_line)
        except json.JSONDecodeError as exc:
            raise Malformed("invalid_json", text_line, f"{exc.msg} at column {exc.colno}") from None
    if not isinstance(raw, dict):
        raise Malformed("not_an_object", raw, f"a JSON {type(raw).__name__}, not an object")
    record: dict[str, Any] = raw
    if fmt in ("html", "warc"):
        text = _decode(record["html"], where)
        url, doc_id, timestamp, extra = record.get("url"), record.get("id"), record.get("timestamp"), {}
    else:
        if cfg.text_field not in record:
            raise Malformed("missing_field", record, f"no field {cfg.text_field!r}")
        text = record[cfg.text_field]
        if isinstance(text, list) and text and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in text):
            text = "\n".join(m["content"] for m in text)  # an OpenAI `messages` conversation: its turns' text
        if not isinstance(text, str):
            raise Malformed("field_not_text", record, f"field {cfg.text_field!r} is {type(text).__name__}")
        url = record.get(cfg.url_field) if cfg.url_field else None
        doc_id = record.get(cfg.id_field) if cfg.id_field else None
        timestamp = record.get(cfg.timestamp_field) if cfg.timestamp_field else None
        extra = {k: record[k] for k in cfg.keep_fields if k in record}
    if not text.strip():
        raise Malformed("empty", record if fmt not in ("html", "warc") else {"url": url}, "empty page")
    content = cfg.content if cfg.content != "auto" else ("html" if fmt in ("html", "warc") or _looks_like_html(text) else "text")
    labels = {"source": source, **extra}
    if timestamp is not None:
        labels["timestamp"] = str(timestamp)
    return Document(text=text, id=str(doc_id) if doc_id is not None else f"{source}:{where}",
                    metadata={"url": url, "source": source, "where": where, "order": order, "content": content,
                              "labels": labels})


class Reader(PipelineStep):
    """The first step of every shard: opens the shard's ledger and yields its documents."""

    type = "chatforge"
    name = "read"

    def __init__(self, inputs: list[InputConfig], ledger: Ledger):
        super().__init__()
        self.inputs = inputs
        self.ledger = ledger
        self.files = [(cfg, file, fmt) for cfg in inputs for file, fmt in expand(cfg)]

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self.ledger.open(f"{rank:05d}")
        order = -1
        for cfg, file, fmt in self.files:
            source = cfg.name or (Path(cfg.path).stem if Path(cfg.path).is_file() else Path(cfg.path).name)
            records = _READERS[fmt](file)
            while True:
                try:
                    where, raw = next(records)
                except StopIteration:
                    break
                except Malformed as bad:  # the file itself broke off (truncated WARC, not Parquet)
                    order += 1
                    if order % world_size == rank:
                        self._malformed(bad, source, str(file), order)
                    break
                order += 1
                if order % world_size != rank:
                    continue
                self.ledger.seen(STEP)
                try:
                    doc = to_document(raw, fmt, cfg, source, f"{file.name} {where}", order)
                except Malformed as bad:
                    self._malformed(bad, source, f"{file.name} {where}", order, counted=True)
                    continue
                self.ledger.kept(STEP)
                yield doc

    def _malformed(self, bad: Malformed, source: str, where: str, order: int, counted: bool = False) -> None:
        if not counted:
            self.ledger.seen(STEP)
        raw = bad.raw if isinstance(bad.raw, str) else json.dumps(bad.raw, ensure_ascii=False, default=str)
        doc = Document(text=raw, id=f"{source}:{where}", metadata={"source": source, "where": where, "order": order})
        self.ledger.drop(STEP, bad.reason, doc, bad.detail)
