"""Multiple-choice question files: C-Eval and MMLU CSV layouts.

Both benchmarks ship one CSV per subject per split, `root/{dev,val,test}/<subject>_<split>.csv`:

- C-Eval: a header `id,question,A,B,C,D,answer`, plus `explanation` in the dev split; the public test
  split leaves `answer` empty. The task world's knowledge test (`chatforge world write`) uses this layout.
- MMLU: no header, six columns `question,A,B,C,D,answer`.

A malformed row raises `DataError` naming the file, the line and the field: a benchmark with a silently
dropped question is not the benchmark any more, so nothing is skipped.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from chatforge.errors import DataError

LETTERS = ("A", "B", "C", "D")
Layout = Literal["auto", "ceval", "mmlu"]
MMLU_COLUMNS = ("question", *LETTERS, "answer")
_SPLIT_SUFFIX = re.compile(r"_(dev|val|test|train)$")


@dataclass(frozen=True)
class McQuestion:
    """One four-option question. `answer` is None where the file gives none (C-Eval's public test split)."""

    subject: str
    question: str
    options: dict[str, str]  # letter -> option text, in LETTERS order
    answer: str | None
    explanation: str = ""
    where: str = ""  # "file:line" of the row's first line
    id: str = ""  # C-Eval's `id` column ("" for MMLU)


def subject_of(path: str | Path) -> str:
    """`world_a` for `.../world_a_test.csv`: the file name without its split suffix."""
    return _SPLIT_SUFFIX.sub("", Path(path).stem)


def read_mc_csv(path: str | Path, layout: Layout = "auto", subject: str | None = None) -> list[McQuestion]:
    """The questions of one C-Eval or MMLU CSV file, in file order.

    `layout="auto"` reads a first row that names `question` and `answer` columns as a C-Eval header,
    anything else as MMLU data. `subject` defaults to the file name without `_<split>`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"multiple-choice file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: CSVs saved by spreadsheets start with a BOM
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 (invalid byte at offset {exc.start})") from None
    subject = subject if subject is not None else subject_of(path)
    rows = list(_rows_with_lines(text, path))
    if not rows:
        raise DataError(f"{path}: empty file, expected C-Eval or MMLU rows")
    first_line, first = rows[0]
    header = [cell.strip().lower() for cell in first]
    if layout == "auto":
        layout = "ceval" if {"question", "answer"} <= set(header) else "mmlu"
    if layout == "ceval":
        columns = _ceval_columns(first, path)
        rows = rows[1:]
    elif layout == "mmlu":
        columns = list(MMLU_COLUMNS)
    else:
        raise DataError(f"{path}: unknown layout {layout!r}; use auto, ceval or mmlu")
    return [_question(cells, columns, f"{path}:{line}", subject) for line, cells in rows]


def _rows_with_lines(text: str, path: Path):
    """(line number of the row's first line, cells); blank lines skipped. A quoted cell may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""))
    next_line = 1
    try:
        for cells in reader:
            line, next_line = next_line, reader.line_num + 1
            if cells and any(cell.strip() for cell in cells):
                yield line, cells
    except csv.Error as exc:
        raise DataError(f"{path}:{next_line}: unreadable CSV: {exc}") from None


def _ceval_columns(header: list[str], path: Path) -> list[str]:
    columns = [cell.strip() for cell in header]
    # Column names are matched case-insensitively for question/answer/explanation, exactly for letters.
    canonical = {"question": "question", "answer": "answer", "explanation": "explanation", "id": "id"}
    columns = [canonical.get(c.lower(), c) for c in columns]
    for needed in ("question", *LETTERS, "answer"):
        if needed not in columns:
            raise DataError(f"{path}:1: header has no column {needed!r} (columns: {', '.join(columns)})")
    return columns


def _question(cells: list[str], columns: list[str], where: str, subject: str) -> McQuestion:
    if len(cells) < len(columns):
        missing = columns[len(cells)]
        raise DataError(
            f"{where}: field {missing!r} is missing (row has {len(cells)} fields, expected {len(columns)}: "
            f"{','.join(columns)})"
        )
    if len(cells) > len(columns):
        raise DataError(f"{where}: row has {len(cells)} fields, expected {len(columns)} ({','.join(columns)})")
    record = dict(zip(columns, cells))
    question = record["question"].strip()
    if not question:
        raise DataError(f"{where}: field 'question' is empty")
    answer = record["answer"].strip()
    if answer and answer not in LETTERS:
        raise DataError(f"{where}: field 'answer' is {answer!r}, expected one of {', '.join(LETTERS)} (or empty)")
    return McQuestion(
        subject=subject,
        question=question,
        options={letter: record[letter].strip() for letter in LETTERS},
        answer=answer or None,
        explanation=record.get("explanation", "").strip(),
        where=where,
        id=record.get("id", "").strip(),
    )


def find_subject_files(root: str | Path, split: str = "test") -> dict[str, Path]:
    """{subject: path} for `root/<split>/<subject>_<split>.csv`, sorted by subject (C-Eval and MMLU)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"multiple-choice data directory not found: {root}")
    folder = root / split
    if not folder.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DataError(
            f"{root} has no {split}/ folder (folders: {', '.join(present) or 'none'}); "
            f"expected {root}/{split}/<subject>_{split}.csv"
        )
    files = {path.name[: -len(f"_{split}.csv")]: path for path in sorted(folder.glob(f"*_{split}.csv"))}
    if not files:
        raise DataError(f"{folder} holds no <subject>_{split}.csv files")
    return files
