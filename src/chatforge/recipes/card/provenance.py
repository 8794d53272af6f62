"""Where a recipe's results came from: the code (git commit, uncommitted changes), the packages
(installed versions against requirements.lock), the machine, and the hashes of every input file."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import chatforge

LOCK_LINE = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)")
KEY_PACKAGES = ("torch", "transformers", "tokenizers", "peft", "datasets", "pydantic", "numpy")


def git_state(directory: Path | None = None) -> dict:
    """Commit and dirty flag of the repository the chatforge package was imported from (or None outside one)."""
    where = directory or Path(chatforge.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=20)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=60
        )
        changed = [line[3:] for line in status.stdout.splitlines() if line.strip()]
        return {"commit": commit.stdout.strip(), "dirty": bool(changed), "changed_files": changed[:20]}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def find_lock(start: Path | None = None) -> Path | None:
    here = (start or Path(chatforge.__file__).resolve()).parent
    for folder in [here, *here.parents]:
        if (folder / "requirements.lock").is_file():
            return folder / "requirements.lock"
    return None


def parse_lock(text: str) -> dict[str, str]:
    """{normalised name: version} of the `name==version` lines of a pip/uv lock file."""
    out = {}
    for line in text.splitlines():
        m = LOCK_LINE.match(line.strip())
        if m:
            out[_normalise(m.group(1))] = m.group(2)
    return out


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def package_versions(lock: Path | None) -> dict:
    """Installed versions of the locked packages: which match, which differ, which are missing."""
    installed = {_normalise(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}
    key = {name: installed.get(name) for name in KEY_PACKAGES}
    if lock is None:
        return {"lock": None, "key": key, "differ": [], "missing": [], "matching": 0}
    locked = parse_lock(lock.read_text(encoding="utf-8"))
    differ = [{"package": n, "locked": v, "installed": installed[n]} for n, v in sorted(locked.items())
              if n in installed and installed[n].split("+")[0] != v.split("+")[0]]
    missing = sorted(n for n in locked if n not in installed)
    return {"lock": str(lock), "key": key, "differ": differ, "missing": missing,
            "matching": len(locked) - len(differ) - len(missing), "locked": len(locked)}


def hardware() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = round(pages / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {
        "platform": platform.platform(), "python": sys.version.split()[0], "cpu": cpu,
        "cpu_cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(), "memory_gib": memory, "gpus": gpus,
        "torch": torch.__version__, "cuda": torch.version.cuda,
    }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_hashes(root: Path, markers: dict[str, dict], recipe_path: Path) -> list[dict]:
    """Every input file of the run with its sha256: the recipe, each stage's files from outside the
    recipe directory (its marker), and the files a `world write` stage generated (its manifest)."""
    rows = [{"file": str(recipe_path), "sha256": sha256_file(recipe_path), "used_by": "the recipe"}]
    for name, marker in markers.items():
        for file, digest in (marker.get("files") or {}).items():
            rows.append({"file": file, "sha256": digest, "used_by": name})
        manifest = root / name / "manifest.json"
        if marker.get("stage") == "world write" and manifest.is_file():
            for relative, entry in json.loads(manifest.read_text()).get("files", {}).items():
                rows.append({"file": f"{name}/{relative}", "sha256": entry.get("sha256", ""), "used_by": f"{name} (generated)"})
    return rows
