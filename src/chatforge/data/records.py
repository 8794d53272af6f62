"""One reader layer for record files: paths, formats, JSON decoding and the reject log.

    DataSource                         the `{path, split}` entry of every stage's `data.sources` / `val_sources`
    expand_paths(path, split)          a file, or a directory's .jsonl/.json/.parquet files (sorted; of one
                                       split), or an HF dataset dir
    file_records(path, rejects, split) ("line N" | "item N" | "row N", record) of one file or HF dataset directory
    jsonl_records(path, rejects)       ("line N", record) of a JSONL file
    read_records(sources, parse, rejects)  parse(record, source, where) over every record; RecordError -> rejects
    jsonl_objects(path, parse, rejects, what, limit)  the same for one JSONL file of JSON objects (prompt files)

Every JSON text goes through `decode_record` (one function: `data.safe_json.decode_json`, so a BOM,
a lone surrogate, an absurd number or nesting is a rejected record, never a crash). A record a reader
cannot use raises `RecordError(reason, detail)` in its parser; the reader writes it to the
`RejectLog` with file, line and reason, and moves on. The parsers of the record kinds (messages,
prompts, pairs, rankings) live in `data/parsers.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.data.safe_json import JsonRejected, decode_json
from chatforge.errors import DataError
from chatforge.run_dir import RejectLog

SUFFIXES = (".jsonl", ".json", ".parquet")
SHARD = re.compile(r"-\d+-of-\d+$")  # the Hub's shard suffix: train_prefs-00000-of-00001.parquet
T = TypeVar("T")


class DataSource(StrictModel):
    """One entry of a stage's `data.sources` / `data.val_sources`: where records are, and which split."""

    path: str = Field(description="a .jsonl / .json / .parquet file, a directory of them, or an HF dataset dir (save_to_disk)")
    split: str | None = Field(
        None,
        description="the split to read: of a DatasetDict (e.g. train_prefs), or of a directory the files of that "
        "split (named SPLIT.jsonl, SPLIT-00000-of-00001.parquet or in a folder SPLIT/); default: a dict's only "
        "split, else its 'train' split; a directory's every file",
    )


class RecordError(ValueError):
    """A record that cannot be used; `reason` is the reject reason, `detail` says what is wrong."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_record(raw: bytes | str) -> Any:
    """The value of one JSON text (a JSONL line, a .json file); `RecordError` when it is not readable."""
    try:
        return decode_json(raw)
    except JsonRejected as exc:
        raise RecordError(exc.reason, exc.detail) from None


def is_dataset_dir(path: Path) -> bool:
    """A `datasets.save_to_disk` directory (one dataset or a dict of splits)."""
    return path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists())


def expand_paths(path: str | Path, missing: str = "input not found", split: str | None = None) -> list[Path]:
    """[path] for a file or an HF dataset directory; a plain directory's .jsonl/.json/.parquet files, sorted
    (with `split`, only the files of that split: `file_splits`). `DataError` ("{missing}: PATH") for a
    path that does not exist, a directory without such files, or a split no file has."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{missing}: {path}")
    if path.is_file() and split is not None:
        raise DataError(f"{path}: split {split!r} given for a file; a split selects from a directory or a DatasetDict")
    if path.is_dir() and not is_dataset_dir(path):
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise DataError(f"input directory {path} holds no .jsonl/.json/.parquet files")
        if split is not None:
            chosen = [f for f in files if split in file_splits(f, path)]
            if not chosen:
                found = sorted({s for f in files for s in file_splits(f, path)})
                raise DataError(f"{path}: no file of split {split!r} (the files' names give: {', '.join(found)})")
            files = chosen
        return files
    return [path]


def file_splits(file: Path, root: Path) -> set[str]:
    """The split names a file of directory `root` can be chosen by: its name without suffix and shard
    number (`test_prefs-00000-of-00001.parquet` -> test_prefs) and each folder between root and it."""
    stem = file.name[: -len(file.suffix)] if file.suffix else file.name
    return {SHARD.sub("", stem), *file.relative_to(root).parts[:-1]}


def jsonl_records(path: Path, rejects: RejectLog) -> Iterator[tuple[str, Any]]:
    """("line N", record) of a JSONL file; undecodable lines go to `rejects`, blank ones are skipped."""
    name = str(path)
    with Path(path).open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            where = f"line {lineno}"
            if lineno == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a BOM before a blank first line: still blank
            if not raw.strip():
                continue
            try:
                yield where, decode_record(raw)
            except RecordError as exc:
                rejects.add(name, where, exc.reason, exc.detail, raw[:200].decode("utf-8", "replace"))


def file_records(path: Path, rejects: RejectLog, split: str | None = None) -> Iterator[tuple[str, Any]]:
    """(where, record) of one file: JSONL, a .json array (or one object), Parquet, or an HF dataset dir
    (of a DatasetDict, the split `split`: `dataset_split`)."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".parquet":
        yield from _dataset_records(path, split if path.is_dir() else None)
        return
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if path.suffix.lower() == ".json" and head.startswith(b"["):
        try:
            items = decode_record(path.read_bytes())
        except RecordError as exc:
            raise DataError(f"{path}: not a valid JSON array: {exc.detail}") from None
        for i, item in enumerate(items):
            yield f"item {i}", item
        return
    yield from jsonl_records(path, rejects)


def _dataset_records(path: Path, split: str | None) -> Iterator[tuple[str, Any]]:
    from datasets import Dataset, load_from_disk

    try:
        ds = Dataset.from_parquet(str(path)) if path.is_file() else load_from_disk(str(path))
    except Exception as exc:  # pyarrow and datasets raise many types; the message is what the user needs
        raise DataError(f"{path}: cannot read: {exc}") from None
    for row, record in enumerate(dataset_split(ds, path, split)):
        # Parquet gives every row every column; a missing optional field reads as None.
        yield f"row {row}", {k: v for k, v in record.items() if v is not None}


def dataset_split(ds: Any, path: Path, split: str | None) -> Any:
    """The `datasets.Dataset` to read of what `load_from_disk(path)` gave: of a DatasetDict the split
    `split`, or without one its only split, else its 'train' split; a single dataset as it is (a
    `split` must then be the one it was saved as)."""
    from datasets import DatasetDict

    if not isinstance(ds, DatasetDict):
        if split is not None and str(ds.split) != split:
            raise DataError(f"{path}: one dataset (split {ds.split}), not a DatasetDict with a split {split!r}")
        return ds
    if split is None:
        if len(ds) == 1:
            return next(iter(ds.values()))
        if "train" not in ds:
            raise DataError(f"{path}: a DatasetDict with splits {', '.join(ds)} and no 'train': choose one with `split:`")
        split = "train"
    if split not in ds:
        raise DataError(f"{path}: no split {split!r} (the DatasetDict's splits: {', '.join(ds)})")
    return ds[split]


def read_records(
    sources: Iterable[str | Path | DataSource], parse: Callable[[Any, str, str], T], rejects: RejectLog,
    missing: str = "input not found",
) -> Iterator[T]:
    """parse(record, source, where) of every record of every source (a path, or a `DataSource` with its
    split; expanded), in order; a record whose parse raises `RecordError` goes to `rejects` with its
    file, place and reason."""
    for source in sources:
        path, split = (source.path, source.split) if isinstance(source, DataSource) else (source, None)
        for file in expand_paths(path, missing, split):
            name = str(file)
            for where, record in file_records(file, rejects, split):
                try:
                    yield parse(record, name, where)
                except RecordError as exc:
                    rejects.add(name, where, exc.reason, exc.detail, record)


def jsonl_objects(
    path: str | Path, parse: Callable[[dict, str, str], T | None], rejects: RejectLog, what: str = "file",
    limit: int | None = None,
) -> list[T]:
    """parse(record, source, where) of the JSON objects of one JSONL file, in order, at most `limit`
    of them. A line that is not an object goes to `rejects` (`not_an_object`), as does a record whose
    parse raises `RecordError`; a parse that returns None skips the record without a reject.
    `DataError` ("{what} not found: PATH") when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    name, out = str(path), []
    for where, record in jsonl_records(path, rejects):
        try:
            if not isinstance(record, dict):
                raise RecordError("not_an_object", f"expected a JSON object, got {type(record).__name__}")
            item = parse(record, name, where)
        except RecordError as exc:
            rejects.add(name, where, exc.reason, exc.detail, record)
            continue
        if item is None:
            continue
        out.append(item)
        if limit is not None and len(out) >= limit:
            break
    return out
