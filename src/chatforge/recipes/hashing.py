"""Content hashes of a stage's input files, cached by (path, size, mtime) so a rerun does not reread
gigabytes of unchanged model weights; and the fingerprint that decides whether a stage is up to date."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

# Keys that change how a stage reports, not what it computes: editing them never reruns a stage.
COSMETIC_KEYS = {"progress", "log_every", "report_to", "log_level"}
# Keys naming where a stage writes (its run directory, a shared token cache): never inputs.
OUTPUT_KEYS = {"out", "cache_dir"}


class FileHasher:
    """sha256 of files and directories (a directory: the hashes of its files, by relative path)."""

    def __init__(self, cache_path: Path | None = None):
        self.cache_path = cache_path
        self.cache: dict[str, list] = {}
        if cache_path is not None and cache_path.is_file():
            try:
                self.cache = json.loads(cache_path.read_text())
            except ValueError:
                self.cache = {}

    def file(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        cached = self.cache.get(key)
        if cached and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
            return cached[2]
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        value = digest.hexdigest()
        self.cache[key] = [stat.st_size, stat.st_mtime_ns, value]
        return value

    def path(self, path: Path) -> str:
        if path.is_file():
            return self.file(path)
        digest = hashlib.sha256()
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d != "checkpoints" and not d.startswith("."))
            for name in sorted(files):
                full = Path(root) / name
                digest.update(f"{full.relative_to(path)}\0{self.file(full)}\n".encode())
        return digest.hexdigest()

    def save(self) -> None:
        if self.cache_path is not None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.cache))
            tmp.replace(self.cache_path)


def input_paths(config: Any, recipe_dir: Path) -> list[Path]:
    """Every string in a resolved config that names an existing file or directory outside the recipe
    directory: the stage's own inputs (an earlier stage's outputs are covered by that stage's run id)."""
    found: list[Path] = []
    inside = recipe_dir.resolve()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k not in OUTPUT_KEYS:
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and value and len(value) < 4096 and "\n" not in value:
            path = Path(value)
            try:
                exists = path.exists()
            except OSError:
                return
            if exists and path.resolve() != Path.cwd().resolve() and not path.resolve().is_relative_to(inside):
                if path not in found:
                    found.append(path)

    walk(config)
    return found


def without_cosmetic(config: Any) -> Any:
    if isinstance(config, dict):
        return {k: without_cosmetic(v) for k, v in config.items() if k not in COSMETIC_KEYS}
    if isinstance(config, list):
        return [without_cosmetic(v) for v in config]
    return config


def fingerprint(kind: str, config: dict, inputs: dict[str, str], files: dict[str, str]) -> str:
    """What a stage's outputs depend on: its kind, its resolved config (less cosmetic keys), the run ids
    of the earlier stages it reads, and the content hashes of its other input files."""
    blob = json.dumps(
        {"stage": kind, "config": without_cosmetic(config), "inputs": inputs, "files": files},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


_ABSENT = object()  # a key one config has and the other lacks (a stage's code added or dropped a setting)


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs (cosmetic keys ignored); a key
    only one of them has counts, even when its value is null."""
    old, new = without_cosmetic(old), without_cosmetic(new)
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += changed_keys(old.get(key, _ABSENT), new.get(key, _ABSENT), f"{prefix}{key}.")
        return out
    if old is _ABSENT or new is _ABSENT:
        return [f"{prefix.rstrip('.')} ({'new' if old is _ABSENT else 'gone'})"]
    return [] if old == new else [prefix.rstrip(".") or "(config)"]
