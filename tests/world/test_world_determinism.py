"""Same seed gives byte-identical files (even across processes); the manifest describes them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from chatforge.world import write_world


def _tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_in_another_process(tiny_dir, tmp_path):
    # A fresh interpreter with a different string-hash seed catches any set- or hash-order dependence.
    code = "import sys; from chatforge.world import write_world; write_world(sys.argv[1], seed=1234, size='tiny')"
    env = {**os.environ, "PYTHONHASHSEED": "977"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=env)
    first, second = _tree(tiny_dir), _tree(tmp_path)
    assert len(first) == 35
    assert first.keys() == second.keys()
    different = [name for name in first if first[name] != second[name]]
    assert different == []


def test_another_seed_changes_the_files(tiny_dir, tmp_path):
    write_world(tmp_path, seed=99, size="tiny")
    ours = json.loads((tiny_dir / "manifest.json").read_text())["files"]
    theirs = json.loads((tmp_path / "manifest.json").read_text())["files"]
    changed = [name for name in ours if ours[name]["sha256"] != theirs[name]["sha256"]]
    assert len(changed) == len(ours)


def test_manifest_counts_sizes_and_hashes_match_the_files(tiny_dir):
    manifest = json.loads((tiny_dir / "manifest.json").read_text())
    assert manifest["seed"] == 1234 and manifest["size"] == "tiny" and manifest["people"] == 24
    assert set(manifest["versions"]) == {"python", "faker"}
    for relative, entry in manifest["files"].items():
        data = (tiny_dir / relative).read_bytes()
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        if relative.endswith(".csv"):
            assert entry["records"] == len(data.decode().splitlines()) - 1  # minus the header
        else:
            assert entry["records"] == len(data.decode().splitlines())
        assert entry["records"] > 0, relative


def test_tiny_writes_in_seconds(tmp_path):
    start = time.perf_counter()
    write_world(tmp_path, size="tiny")
    assert time.perf_counter() - start < 5.0
