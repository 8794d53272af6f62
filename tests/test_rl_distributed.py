"""Online RL under torchrun on CPU (gloo): 2 processes train like 1 with the same rollout batch.

Every run is the real stage in a subprocess (`tests/rl_torchrun_driver.py`: `chatforge.cli.main`, with
each prompt's samples seeded by the prompt, so both runs draw the same samples from the same weights,
and each rank's final weights written out). The rollout batch is 4 prompts x 2 samples = 8 rows, one
optimizer step per rollout: 1 process as 2 micro-batches of 4, 2 processes as 1 micro-batch of 4 each
(its 2 prompts). Compared per step: loss and pre-clip gradient norm (which the global token count and
the gradient all-reduce set), the rollout's proxy reward, KL and β (the whole batch's on every rank).

Why not exact: the 2-process run sums gradients in another order (per rank, then gloo) and runs its
forwards on 4 rows instead of 8; AdamW carries the float32 differences into later steps and rollouts.
Real faults fail by far more: both ranks sampling the same prompts changes the step-1 loss and gradient
norm by 10-100%, a KL or reward normalisation taken over one rank's rows moves β and the advantages,
a missing all-reduce leaves the ranks' weights apart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import chatforge
from crashed_run import crashed_after

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
DRIVER = TESTS / "rl_torchrun_driver.py"
STEPS = 3
LOSS_ATOL = 1e-5
GRAD_NORM_RTOL = 1e-4
WEIGHT_ATOL = 1e-5  # lr 1e-3: one AdamW step moves a weight by ~1e-3


def distinct_reward(prompt, response) -> float:
    """A proxy on which two different texts almost never tie."""
    return zlib.crc32(response.encode()) % 1000 / 1000


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}}
    src = str(Path(chatforge.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, str(TESTS), *filter(None, [env.get("PYTHONPATH")])])
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return env


def _run(stage: str, nproc: int, args: list[str], expect_error: str | None = None) -> str:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    cmd = [*launcher, str(DRIVER), stage, *args]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    if expect_error is not None:
        assert proc.returncode != 0 and expect_error in proc.stdout + proc.stderr, proc.stderr[-3000:]
        return proc.stdout
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def _args(world: Path, base_dir: Path, out: Path, nproc: int, *extra: str) -> list[str]:
    micro, accum = (4, 2) if nproc == 1 else (4, 1)  # the same 8-row optimizer step
    return [
        f"out={out}", f"model={base_dir}",
        f"data.sources=[{{path: {world}/verifiable/train.jsonl}}]", "data.val_sources=[]",
        "rollout.prompts_per_rollout=4", "rollout.samples_per_prompt=2", "rollout.epochs=1",
        "rollout.sampling.max_new_tokens=6",
        "reward.scorer={kind: function, path: 'test_rl_stage:length_reward'}",
        f"train.micro_batch_size={micro}", f"train.grad_accum_steps={accum}", f"train.max_steps={STEPS}",
        "train.save_every=1", "train.eval_every=0", "train.device=cpu", "train.progress=false", "optim.lr=1e-3",
        "diagnostics.samples_every=1", *extra,
    ]


def _read(run: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (run / name).read_text().splitlines() if line.strip()]


def _steps(run: Path) -> dict[int, dict]:
    rows = [r for r in _read(run, "metrics.jsonl") if "loss" in r]
    by_step = {r["step"]: r for r in rows}
    assert len(by_step) == len(rows), f"{run}: a step was logged twice (only rank 0 may log)"
    return by_step


class Runs:
    def __init__(self, root: Path, world: Path, base_dir: Path):
        self.root, self.world, self.base_dir = root, world, base_dir
        self.done: dict[str, Path] = {}
        self.stdout: dict[str, str] = {}

    def get(self, name: str, stage: str, nproc: int, *extra: str) -> Path:
        if name not in self.done:
            out = self.root / name
            extra = tuple(e.replace("WORLD", str(self.world)).replace("ROOT", str(self.root)) for e in extra)
            self.stdout[name] = _run(stage, nproc, _args(self.world, self.base_dir, out, nproc, *extra))
            self.done[name] = out
        return self.done[name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, world, base_dir) -> Runs:
    return Runs(tmp_path_factory.mktemp("rl_dist"), world, base_dir)


# RLOO with its KL (k1) in the reward: old log-probs from the sampler, β adapted from the whole batch's KL;
# PPO: the critic's GAE advantages whitened and the scores normalised over the whole batch. PPO's AdamW eps is
# 1e-6: Adam's first steps move a weight by about lr·g/(|g| + eps), so a gradient that is ~0 (the zero-initialised
# value head's bias: the whitened scores' mean is 0) moves by up to ±lr on float noise the two runs' summation
# orders flip (measured with eps 1e-8: the value bias 4.4e-4 apart after 3 steps, the step-3 loss 1.7e-5; with
# 1e-6: 8e-6 and 4e-7, the policy's weights 2.5e-7)
# online DPO: each rank draws its share of every draw's prompts until each has its share of a step's pairs;
# a reward that tells any two texts apart pairs every prompt, so both runs train on the same 8 prompts' pairs
# (with ties, one process keeps the first 8 pairs of the draws, two keep the first 4 of each rank's: others)
ALGOS = {
    "grpo": ("grpo", []),  # on-policy: no old log-probs, k3 to the reference as a loss
    "rloo": ("grpo", ["loss.advantage=rloo", "kl.in_reward=true", "kl.estimator=k1", "kl.adaptive={target: 0.01, horizon: 10}"]),
    "ppo": ("ppo", ["reward.normalize=running", "kl.coef=0.1", "optim.eps=1e-6"]),
    # PPO-ptx: the step's 4 pretraining windows split over the ranks, γ × the mean NLL of all 4
    "ppo_ptx": ("ppo", ["optim.eps=1e-6", "ptx={sources: [{path: WORLD/pretrain/world_a_train.jsonl}], coef: 0.5, "
                        "rows_per_step: 4, seq_len: 16, cache_dir: ROOT/cache}"]),
    "online_dpo": ("online-dpo", ["reward.scorer={kind: function, path: 'test_rl_distributed:distinct_reward'}",
                                  "min_margin=0.001"]),
}
ROLLOUT_KEYS = {"grpo": ("proxy", "kl", "beta", "length", "entropy"), "rloo": ("proxy", "kl", "beta", "length", "entropy"), "ppo": ("proxy", "kl", "beta", "length", "entropy"),
                "ppo_ptx": ("proxy", "kl", "beta", "length", "entropy"),
                "online_dpo": ("proxy", "length", "pairs")}


@pytest.mark.parametrize("algo", list(ALGOS))
def test_two_processes_train_like_one(runs, algo):
    stage, extra = ALGOS[algo]
    one = runs.get(f"{algo}_1", stage, 1, *extra)
    two = runs.get(f"{algo}_2", stage, 2, *extra)
    assert "data parallel: ddp over 2 processes (gloo)" in runs.stdout[two.name]
    a, b = _steps(one), _steps(two)
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    for step in a:
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], abs=LOSS_ATOL), step
        assert b[step]["grad_norm"] == pytest.approx(a[step]["grad_norm"], rel=GRAD_NORM_RTOL), step
        proxy = "pairs/chosen_score" if algo == "online_dpo" else "reward/proxy"
        assert b[step][proxy] == pytest.approx(a[step][proxy], abs=1e-6), step
        if algo == "ppo_ptx":
            assert b[step]["loss/ptx"] == pytest.approx(a[step]["loss/ptx"], abs=LOSS_ATOL), step
    ra, rb = _read(one, "rollouts.jsonl"), _read(two, "rollouts.jsonl")
    assert len(ra) == len(rb) == STEPS
    for x, y in zip(ra, rb):
        for key in ROLLOUT_KEYS[algo]:
            assert y[key] == pytest.approx(x[key], abs=1e-5), key
    if algo == "rloo":
        assert ra[-1]["beta"] != 0.04  # β moved, by the same amount on both
    # the ranks hold the same weights; rank 0's final/ is a plain transformers directory equal to one process's
    r0, r1 = load_file(str(two / "rank_0.safetensors")), load_file(str(two / "rank_1.safetensors"))
    assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)
    from transformers import AutoModelForCausalLM

    want = AutoModelForCausalLM.from_pretrained(one / "final").state_dict()
    got = AutoModelForCausalLM.from_pretrained(two / "final").state_dict()
    start = AutoModelForCausalLM.from_pretrained(runs.base_dir).state_dict()
    assert max(float((want[k] - start[k]).abs().max()) for k in want) > 1e-3  # training moved it
    assert max(float((got[k] - want[k]).abs().max()) for k in want) <= WEIGHT_ATOL


LOGS = ("metrics.jsonl", "rollouts.jsonl")  # trimmed to where the killed run had got


def test_two_process_resume_in_the_middle_of_a_rollout(runs):
    """Two epochs per rollout (two steps): a run stopped after step 3 (rollout 2 half used, each rank's
    half of it only in the checkpoint) resumes on 2 processes to the uninterrupted run's weights; on 1
    process it is refused (the buffer is split over 2)."""
    extra = ["rollout.epochs=2", "kl.coef=0.04", f"train.max_steps={STEPS + 1}"]
    full = runs.get("grpo_epochs_2", "grpo", 2, *extra)
    resumed = crashed_after(full, runs.root / "grpo_resumed", 3, LOGS)
    out = _run("grpo", 2, _args(runs.world, runs.base_dir, resumed, 2, *extra))
    assert "(step 3)" in out  # it resumed, not restarted
    a, b = _steps(full), _steps(resumed)
    assert b[4]["loss"] == a[4]["loss"] and b[4]["grad_norm"] == a[4]["grad_norm"]
    want, got = load_file(str(full / "rank_0.safetensors")), load_file(str(resumed / "rank_1.safetensors"))
    assert all(torch.equal(want[k], got[k]) for k in want)
    again = crashed_after(full, runs.root / "grpo_on_one", 3, LOGS)
    _run("grpo", 1, _args(runs.world, runs.base_dir, again, 1, *extra), expect_error="resume it with 2 process(es)")
