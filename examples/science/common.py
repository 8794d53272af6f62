"""Shared plumbing of the science experiments (docs/science.md): run `chatforge pretrain` with
overrides (skipping a run whose summary exists, so a driver can be rerun after a kill), read its
summary and metrics, and pool seeds into a mean and a standard error.

Every run is a subprocess with OMP_NUM_THREADS=1 (the experiments were sized for a shared 2-core
machine); the world and tokenizer are made once by `setup()`.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "runs" / "science"
WORLD = RUNS / "world"
TOKENIZER = RUNS / "tokenizer"
BASE = ROOT / "examples" / "science" / "base.yaml"
IMG = ROOT / "docs" / "img"
CLI = [sys.executable, "-m", "chatforge"]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def setup() -> None:
    """The task world (default size) and its 1024-token BPE, under runs/science/ (once)."""
    if not (WORLD / "manifest.json").is_file():
        subprocess.run([*CLI, "world", "write", f"out={WORLD}"], check=True, cwd=ROOT, env=env())
    if not (TOKENIZER / "tokenizer.json").is_file():
        sources = ", ".join(
            f"{{path: {WORLD / p}}}"
            for p in ("pretrain/world_a_train.jsonl", "pretrain/world_b_train.jsonl", "pretrain/world_a_qa.jsonl",
                      "pretrain/world_b_qa.jsonl", "instructions/train.jsonl")
        )
        subprocess.run([*CLI, "tokenizer", f"out={TOKENIZER}", "vocab_size=1024", "split_digits=true",
                        f"sources=[{sources}]"], check=True, cwd=ROOT, env=env())


def pretrain(out: Path, *overrides: str, config: Path = BASE, tokenizer: Path = TOKENIZER) -> dict:
    """`chatforge pretrain config overrides...` into `out` (skipped when out/report/summary.json exists)."""
    summary = out / "report" / "summary.json"
    if not summary.is_file() and not _wait_for_other(out, summary):
        out.parent.mkdir(parents=True, exist_ok=True)
        args = [*CLI, "pretrain", str(config), f"out={out}", f"tokenizer={tokenizer}", *overrides]
        with open(out.parent / f"{out.name}.log", "w") as log:
            log.write(" ".join(args) + "\n")
            log.flush()
            done = subprocess.run(args, cwd=ROOT, env=env(), stdout=log, stderr=subprocess.STDOUT)
        (out.parent / f"{out.name}.lock").unlink(missing_ok=True)
        if done.returncode != 0:
            raise SystemExit(f"run {out} failed (exit {done.returncode}); see {out.parent / (out.name + '.log')}")
    return json.loads(summary.read_text())


def _wait_for_other(out: Path, summary: Path) -> bool:
    """Claim `out` for this driver (False), or wait while another live driver runs it (True once done).

    Two drivers may share the runs of one experiment (e.g. one per seed); a lock file holding the
    owner's pid keeps them from training into the same directory at once."""
    import time

    lock = out.parent / f"{out.name}.lock"
    out.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(lock.read_text() or 0)
                os.kill(owner, 0)
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # its owner is gone: take the run over
                continue
            time.sleep(15)
            if summary.is_file():
                return True
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return summary.is_file()


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def curve(out: Path, key: str) -> tuple[list[int], list[float]]:
    rows = [r for r in metrics(out) if key in r]
    return [r["step"] for r in rows], [r[key] for r in rows]


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for one value)."""
    if len(values) < 2:
        return values[0], 0.0
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def fmt(values: list[float], digits: int = 4) -> str:
    m, se = mean_se(values)
    return f"{m:.{digits}f} ± {se:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


def domain_bpb(summary: dict, name: str) -> float:
    return summary["domains"][name]["after"]["bpb"]


def world(path: str) -> str:
    return str(WORLD / path)


def write_table(path: Path, header: list[str], rows: list[list[str]], title: str = "", echo: bool = True) -> str:
    lines = ([f"{title}", ""] if title else []) + [
        "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *["| " + " | ".join(r) + " |" for r in rows]
    ]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if echo:
        print(text)
    return text
