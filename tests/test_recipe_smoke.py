"""recipes/smoke.yaml end to end, as a user runs it (`python -m chatforge run`, separate processes):
one run uninterrupted, and at the same time (the machine's two cores, one thread each) a second one
killed with SIGKILL in the middle of pretraining and then started again with the same command, which
must skip the finished stages, resume pretraining from its checkpoint, and reach the same report
card. Tolerance: every card figure within 1e-4 of the uninterrupted run's (resuming replays the same
data and RNG states; the figures are means of greedy and seeded sampled answers)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4
RECIPE = yaml.safe_load((REPO / "recipes" / "smoke.yaml").read_text())
STEPS = [*RECIPE["stages"], "card"]
pytestmark = pytest.mark.slow


def chatforge_run(out: Path, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        [sys.executable, "-m", "chatforge", "run", "recipes/smoke.yaml", "--out", str(out), *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen,
    )


def finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("smoke")
    clean = chatforge_run(base / "a")
    killed = chatforge_run(base / "b", start_new_session=True)
    checkpoint = base / "b" / "pretrain" / "checkpoints" / "latest"
    deadline = time.monotonic() + 900
    while not checkpoint.exists():  # pretraining has saved step 4 of 8: kill the whole run there
        assert killed.poll() is None, killed.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "pretraining never saved a checkpoint"
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.communicate()
    marker = json.loads((base / "b" / "pretrain" / "recipe_stage.json").read_text())
    final_existed = (base / "b" / "pretrain" / "final").exists()
    rerun = chatforge_run(base / "b")
    return {"a": base / "a", "b": base / "b", "clean": finish(clean), "rerun": finish(rerun),
            "killed_marker": marker, "final_existed": final_existed}


def measures(root: Path) -> dict:
    return json.loads((root / "card" / "measures.json").read_text())["measures"]


def test_smoke_runs_to_the_end_with_plan_progress_report_and_chat_command(runs):
    root, lines = runs["a"], runs["clean"].splitlines()
    assert lines[0] == f"recipe smoke -> {root}/ ({len(STEPS)} steps)"
    for name in STEPS:
        assert any(line.startswith("[") and f"] {name}: done in " in line for line in lines), name
        assert json.loads((root / name / "recipe_stage.json").read_text())["state"] == "done"
    assert f"report card: {root}/report.html (and {root}/report.md)" in lines
    assert any(line.startswith("chat with the final model: chatforge serve ") for line in lines)
    page = (root / "report.html").read_text()
    assert '<table id="card">' in page and "data:image/png;base64," in page
    card = measures(root)
    assert set(card) == {*RECIPE["card"]["models"], "reward model"}
    assert {"knowledge accuracy", "gold reward", "pass@1", "pass@2", "KL to sft"} <= set(card["dpo"])


def test_sigkill_mid_stage_then_rerun_skips_finished_stages_and_matches(runs):
    root = runs["b"]
    assert runs["killed_marker"]["state"] == "running" and not runs["final_existed"]
    plan = runs["rerun"].splitlines()[1 : 1 + len(STEPS)]
    assert "world write  skip    finished; config and inputs unchanged" in plan[0]
    assert "tokenizer    skip    finished; config and inputs unchanged" in plan[1]
    assert "pretrain     resume  interrupted: resumes from its checkpoints" in plan[2]
    assert "resumed from" in (root / "pretrain" / "stage.log").read_text()
    assert json.loads((root / "pretrain" / "recipe_stage.json").read_text())["attempts"] == 2

    resumed, clean = measures(root), measures(runs["a"])
    assert set(resumed) == set(clean)
    for column, figures in clean.items():
        assert set(resumed[column]) == set(figures), column
        for name, figure in figures.items():
            assert abs(resumed[column][name]["value"] - figure["value"]) <= TOLERANCE, (column, name)

    # and a third start has nothing left to do
    again = finish(chatforge_run(root, "--dry-run"))
    step_lines = [line for line in again.splitlines() if re.match(r"\s+\d+\. ", line)]  # not the inputs under them
    assert len(step_lines) == len(STEPS) and all(" skip " in line for line in step_lines), again
