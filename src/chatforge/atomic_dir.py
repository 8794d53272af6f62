"""Write a directory all at once (a run's `final/`, its `adapter/`), and check that one was written completely.

    with atomic_dir(run.final) as tmp:      # a hidden sibling: runs/x/.final.tmp-<pid>
        model.save_pretrained(tmp)
    check_complete(run.final)               # what a later stage calls before loading it

On leaving the block without an error every file and the directory are fsynced, a marker listing
each file's size is written last, and the directory is renamed into place. A kill at any point
leaves either no `final/` (only a hidden temporary that the next write removes) or the previous
complete one; never an empty or half-written `final/` that a later stage would read.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chatforge.errors import DataError

MARKER = "chatforge_complete.json"


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """A fresh temporary directory next to `target` that becomes `target` when the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(target)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        yield tmp
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        for name in files:
            fsync_file(tmp / name)
        marker = tmp / MARKER
        marker.write_text(json.dumps({"files": files}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        fsync_file(marker)
        for sub in sorted({tmp, *(p for p in tmp.rglob("*") if p.is_dir())}):
            fsync_dir(sub)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Two renames: between them only the hidden `.old` copy exists, and `target` is absent rather
    # than partial (POSIX has no atomic swap of two non-empty directories).
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def check_complete(path: str | Path) -> None:
    """Raise `DataError` unless `path` is safe to read as a model directory.

    A directory with the marker must still hold every file it lists, at the listed size. One without
    it is accepted unless it is a chatforge run's `final/` (its run directory has a config.yaml) or a
    temporary of an interrupted write sits next to it: then it was not written by `atomic_dir`, or
    not to the end.
    """
    path = Path(path)
    marker = path / MARKER
    if marker.is_file():
        try:
            files = json.loads(marker.read_text(encoding="utf-8"))["files"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{marker}: unreadable completeness marker ({exc})") from None
        for name, size in files.items():
            file = path / name
            if not file.is_file():
                raise DataError(f"{path} is incomplete: {name} is missing (listed in {MARKER})")
            if file.stat().st_size != size:
                raise DataError(f"{path} is incomplete: {name} has {file.stat().st_size} bytes, {size} were written")
        return
    interrupted = sorted(path.parent.glob(f".{path.name}.tmp-*"))
    if interrupted:
        raise DataError(f"{path}: a write of it was interrupted ({interrupted[0].name} is left); rerun the stage that writes it")
    if path.name == "final" and (path.parent / "config.yaml").is_file():
        raise DataError(
            f"{path} has no {MARKER}: the run that wrote it stopped before finishing (or an older chatforge "
            "wrote it); rerun that stage"
        )


def _remove_leftovers(target: Path) -> None:
    """Temporaries of an earlier write that was killed (any pid: that process is gone or is us)."""
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for left in target.parent.glob(pattern):
            shutil.rmtree(left, ignore_errors=True)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
