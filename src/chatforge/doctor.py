"""What a bug report needs, and the version drift that costs users days: installed packages against the lock.

Pure parts (`read_lock`, `drift`) take their inputs as arguments so they are tested without another
environment; `collect` reads this one.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# The packages whose versions decide whether chatforge works; shown first, always.
KEY_PACKAGES = ("torch", "transformers", "tokenizers", "peft", "datasets", "safetensors", "accelerate", "pydantic")
FIX_COMMAND = "make setup  (or: pip install --require-hashes --no-deps -r requirements.lock)"


@dataclass(frozen=True)
class Drift:
    package: str
    locked: str
    installed: str | None  # None: not installed

    def line(self) -> str:
        have = "not installed" if self.installed is None else f"{self.installed} installed"
        return f"{self.package}: {have}, the lock says {self.locked}"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(text: str) -> dict[str, str]:
    """`{normalised name: version}` from a hashed requirements lock (`name==version \\` lines)."""
    pins = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if match:
            pins[_normal(match.group(1))] = match.group(2)
    return pins


def torch_pin(makefile_text: str) -> str | None:
    """The torch version the Makefile installs before the lock (`TORCH ?= torch==X`)."""
    match = re.search(r"^TORCH \?= torch==(\S+)", makefile_text, re.M)
    return match.group(1) if match else None


def drift(pins: dict[str, str], installed_version) -> list[Drift]:
    """Every locked package whose installed version differs. `installed_version(name)` returns the
    version or None; a local build tag (`2.13.0+cpu`) matches its public version."""
    found = []
    for name, locked in sorted(pins.items()):
        have = installed_version(name)
        if have is None or have.split("+")[0] != locked.split("+")[0]:
            found.append(Drift(name, locked, have))
    return found


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def find_repo_root(start: Path) -> Path | None:
    """The source checkout this chatforge runs from (an editable install), if any: where the lock is."""
    for parent in [start, *start.parents]:
        if (parent / "requirements.lock").is_file() and (parent / "pyproject.toml").is_file():
            return parent
    return None


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _memory_gib() -> tuple[float, float] | None:
    """(total, available) GiB from /proc/meminfo (Linux); None elsewhere."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        kib = lambda key: float(fields[key].split()[0])  # noqa: E731
        return kib("MemTotal") / 2**20, kib("MemAvailable") / 2**20
    except (OSError, KeyError, ValueError):
        return None


def _gpu_lines(torch) -> list[str]:
    if not torch.cuda.is_available():
        return ["gpu: none visible to torch"]
    lines = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        lines.append(f"gpu {i}: {props.name}, {props.total_memory / 2**30:.0f} GiB, capability {props.major}.{props.minor}")
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                lines.append(f"driver: {out.stdout.strip().splitlines()[0]}")
        except (OSError, subprocess.TimeoutExpired):
            pass
    return lines


def collect(root: Path | None) -> tuple[list[str], list[str]]:
    """(report lines, warnings with their fixes) for this environment."""
    import torch

    import chatforge

    lines, warnings = [], []
    commit = _git(root, "rev-parse", "--short", "HEAD") if root else None
    dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no")) if root and commit else False
    source = f"{root} @ {commit}{' (dirty)' if dirty else ''}" if commit else (str(root) if root else "installed package")
    lines.append(f"chatforge: {chatforge.__version__} from {source}")
    lines.append(f"python: {platform.python_version()} ({platform.python_implementation()}), {platform.platform()}")
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
    lines.append(f"torch: {torch.__version__} ({build} build), {torch.get_num_threads()} threads, "
                 f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    for name in KEY_PACKAGES[1:]:
        lines.append(f"{name}: {installed_version(name) or 'not installed'}")
    lines += _gpu_lines(torch)
    if torch.version.cuda and not torch.cuda.is_available():
        warnings.append("torch is a CUDA build but no GPU is visible: on a CPU machine install the CPU build "
                        "(`pip install torch==2.13.0` where it resolves to +cpu), which is gigabytes smaller")
    memory = _memory_gib()
    if memory:
        lines.append(f"memory: {memory[1]:.1f} GiB available of {memory[0]:.1f} GiB")
        if memory[1] < 2:
            warnings.append(f"only {memory[1]:.1f} GiB of memory available: close other jobs or use a smaller preset")
    disk = shutil.disk_usage(Path.cwd())
    lines.append(f"disk: {disk.free / 2**30:.1f} GiB free in {Path.cwd()}")
    if disk.free < 5 * 2**30:
        warnings.append(f"only {disk.free / 2**30:.1f} GiB free on this disk: runs write checkpoints; remove old runs/")

    if root is None:
        lines.append("lock: none found (chatforge is not run from a source checkout); versions not compared")
        return lines, warnings
    pins = read_lock((root / "requirements.lock").read_text())
    makefile = root / "Makefile"
    torch_wanted = torch_pin(makefile.read_text()) if makefile.is_file() else None
    if torch_wanted:
        pins["torch"] = torch_wanted
    differences = drift(pins, installed_version)
    lines.append(f"lock: {root / 'requirements.lock'} ({len(pins)} packages): "
                 + ("every installed version matches" if not differences else f"{len(differences)} differ"))
    for item in differences:
        fix = "pip install torch==" + item.locked if item.package == "torch" else FIX_COMMAND
        warnings.append(f"{item.line()}; fix: {fix}")
    return lines, warnings


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: chatforge doctor\n\nPrints what a bug report needs (chatforge, Python, torch build and threads, "
              "key package versions, GPU and driver, memory, disk) and warns, with the fix, where the installed "
              "packages differ from requirements.lock. Exit status 1 when there is a warning.")
        return 0
    if argv:
        print(f"error: chatforge doctor takes no arguments (got {' '.join(argv)!r})")
        return 2
    lines, warnings = collect(find_repo_root(Path(__file__).resolve().parent))
    print("\n".join(lines))
    if not warnings:
        print("no problems found")
        return 0
    print(f"\n{len(warnings)} warning(s):")
    print("\n".join(f"  - {w}" for w in warnings))
    return 1
