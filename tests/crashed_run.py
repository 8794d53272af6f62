"""A copy of a finished run as if it had been killed right after one of its checkpoints, for resume tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def crashed_after(run: Path, dest: Path, step: int, logs: tuple[str, ...] = ()) -> Path:
    """`run` copied to `dest` without the checkpoints after `step`, its `final/`, and the rows of the
    jsonl `logs` written after `step` (a row's `step`, or its `rollout` + 1): as far as they had got."""
    shutil.copytree(run, dest)
    ckpts = dest / "checkpoints"
    for child in ckpts.iterdir():
        if child.name.startswith("step_") and int(child.name.split("_")[1]) > step:
            shutil.rmtree(child)
    (ckpts / "latest").write_text(f"step_{step:06d}\n")
    shutil.rmtree(dest / "final", ignore_errors=True)
    for name in logs:
        lines = (dest / name).read_text().splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        kept = [r for r in rows if r.get("step", r.get("rollout", 0) + 1) <= step]
        (dest / name).write_text("".join(json.dumps(r) + "\n" for r in kept))
    return dest
