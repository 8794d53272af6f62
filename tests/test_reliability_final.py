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


# -- the stages: final/ is written through atomic_dir, and loaders check it ------------------------

def _pretrain(tmp_path, tokenizer_dir, out, *extra) -> int:
    from chatforge.cli import main

    return main([
        "pretrain", f"out={out}", f"tokenizer={tokenizer_dir}", "model.preset=llama-1m", "data.seq_len=32",
        f"data.cache_dir={tmp_path / 'cache'}", "train.max_steps=2", "train.micro_batch_size=2",
        "train.eval_every=0", "train.progress=false", "final_eval_documents=2", "schedule.warmup_steps=0", *extra,
    ])


def test_a_stage_writes_final_with_its_marker_and_a_later_stage_checks_it(tmp_path, tiny_tokenizer_dir, capsys):
    from chatforge.models.build import load_pretrained

    out = tmp_path / "run"
    assert _pretrain(tmp_path, tiny_tokenizer_dir, out) == 0
    marker = json.loads((out / "final" / MARKER).read_text())
    assert "model.safetensors" in marker["files"] and "config.json" in marker["files"]
    assert not list(out.glob(".final.*"))
    load_pretrained(out / "final")  # complete: loads
    (out / "final" / MARKER).unlink()  # as a run killed before the rename would have left it, were it visible
    with pytest.raises(DataError, match=r"run/final has no chatforge_complete\.json"):
        load_pretrained(out / "final")


def test_a_failing_export_leaves_the_previous_final(tmp_path, tiny_tokenizer_dir, monkeypatch):
    from chatforge.engine.loop import Engine

    out = tmp_path / "run"
    assert _pretrain(tmp_path, tiny_tokenizer_dir, out) == 0
    before = (out / "final" / "model.safetensors").read_bytes()

    def dies_mid_write(self, out_dir, tokenizer=None):
        (out_dir / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Engine, "export", dies_mid_write)
    with pytest.raises(OSError, match="disk full"):
        _pretrain(tmp_path, tiny_tokenizer_dir, out, "train.max_steps=3", "train.resume=never")
    assert (out / "final" / "model.safetensors").read_bytes() == before
    assert not list(out.glob(".final.*"))
    check_complete(out / "final")
