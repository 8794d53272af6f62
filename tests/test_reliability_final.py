"""`final/` is written atomically (temporary sibling, fsync, marker, rename) and later stages check it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from chatforge.atomic_dir import MARKER, atomic_dir, check_complete
from chatforge.errors import DataError


def _write_model(tmp):
    (tmp / "config.json").write_text('{"a": 1}')
    (tmp / "model.safetensors").write_bytes(b"\0" * 1000)


def test_a_finished_write_lands_whole_with_its_marker(tmp_path):
    target = tmp_path / "run" / "final"
    with atomic_dir(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".final.tmp-")
        _write_model(tmp)
        assert not target.exists()  # nothing visible until the block ends
    assert sorted(p.name for p in target.iterdir()) == sorted(["config.json", "model.safetensors", MARKER])
    assert json.loads((target / MARKER).read_text())["files"] == {"config.json": 8, "model.safetensors": 1000}
    assert [p.name for p in target.parent.iterdir()] == ["final"]  # no temporaries left
    check_complete(target)


def test_a_failed_write_keeps_the_previous_final(tmp_path):
    target = tmp_path / "final"
    with atomic_dir(target) as tmp:
        _write_model(tmp)
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("disk full")
    assert (target / "model.safetensors").stat().st_size == 1000
    assert [p.name for p in tmp_path.iterdir()] == ["final"]
    check_complete(target)


KILLED_WRITER = """
import sys, time
from pathlib import Path
from chatforge.atomic_dir import atomic_dir
with atomic_dir(Path(sys.argv[1])) as tmp:
    (tmp / "model.safetensors").write_bytes(b"\\0" * 100)
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_kill_mid_write_leaves_no_final_and_the_next_write_cleans_up(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("x: 1\n")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(run / "final")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "final").exists()
    assert len(list(run.glob(".final.tmp-*"))) == 1
    # A half-written directory someone moved into place by hand is refused, naming the leftover.
    (run / "final").mkdir()
    with pytest.raises(DataError, match=r"a write of it was interrupted \(\.final\.tmp-\d+ is left\)"):
        check_complete(run / "final")
    (run / "final").rmdir()
    with atomic_dir(run / "final") as tmp:
        _write_model(tmp)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "final"]
    check_complete(run / "final")


def test_a_run_final_without_marker_or_with_a_truncated_file_is_refused(tmp_path):
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text("x: 1\n")
    _write_model(run / "final")
    with pytest.raises(DataError, match=rf"run/final has no {MARKER}: the run that wrote it stopped before finishing"):
        check_complete(run / "final")
    with atomic_dir(run / "final") as tmp:
        _write_model(tmp)
    with open(run / "final" / "model.safetensors", "r+b") as fh:
        fh.truncate(10)
    with pytest.raises(DataError, match=r"model\.safetensors has 10 bytes, 1000 were written"):
        check_complete(run / "final")
    (run / "final" / "config.json").unlink()
    with pytest.raises(DataError, match=r"config\.json is missing"):
        check_complete(run / "final")


def test_a_model_directory_from_elsewhere_needs_no_marker(tmp_path):
    hf = tmp_path / "some-hf-model"
    hf.mkdir()
    _write_model(hf)
    check_complete(hf)


def test_the_write_is_durable_before_the_rename(tmp_path, monkeypatch):
    """Every file and the directory are fsynced before the rename makes them visible."""
    order: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (order.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (order.append("rename"), real_replace(a, b))[1])
    with atomic_dir(tmp_path / "final") as tmp:
        _write_model(tmp)
    # 2 files + marker + the directory, then the rename, then the parent directory
    assert order == ["fsync"] * 4 + ["rename", "fsync"]
