"""Kill training runs with SIGKILL, resume them, and compare with an uninterrupted run.

    python bench/fault_injection.py --out runs/faults --stages pretrain sft rm dpo --trials 3
    python bench/fault_injection.py --out runs/faults_writes --trials 4 --modes checkpoint_write final_write

For each stage: one uninterrupted reference run, then `--trials` runs in their own directories,
each killed 1 to `--max-kills` times and then resumed (`train.resume=auto`, the default) until it
finishes. When a trial kills is `--modes[trial % len(modes)]`: `random` (uniform over the
reference's wall time, start-up included), `checkpoint_write` (the moment one of the first three
checkpoint temporaries `checkpoints/.tmp-step_*` appears, polled every millisecond) or
`final_write` (the moment `.final.tmp-*` appears). A trial's later kills land in its resumed runs.

A trial passes when its `final/model.safetensors` is bit-identical to the reference's (every tensor
`torch.equal`), the loss of every step in its `metrics.jsonl` equals the reference's (the resumed
run's row for a step replaces the killed run's), and its `final/` is complete
(`atomic_dir.check_complete`). The inputs (task world, tokenizer, a pretrained base for sft/rm/dpo)
are built once into `OUT/inputs`. Runs use a ~1M-parameter model and 4-12 steps (PPO/GRPO:
rollouts of the world's verifiable prompts scored by the gold reward). Prints one line
per trial and a table; exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

STEPS = {"pretrain": 12, "sft": 10, "rm": 8, "dpo": 8, "ppo": 4, "grpo": 4}


def stage_config(stage: str, inputs: Path) -> dict:
    """A small config of `stage` on the task world; checkpoints every 2 steps so kills land between and inside them."""
    world, base = inputs / "world", inputs / "base" / "final"
    train = {"max_steps": STEPS[stage], "micro_batch_size": 4, "save_every": 2, "eval_every": 0, "seed": 0,
             "progress": False}
    if stage == "pretrain":
        return {"tokenizer": str(inputs / "tokenizer"), "model": {"preset": "llama-1m"},
                "data": {"sources": [{"path": f"{world}/pretrain/world_a_train.jsonl"}], "seq_len": 64,
                         "val_fraction": 0.1, "cache_dir": str(inputs / "cache")},
                "train": train, "optim": {"lr": 3e-3}, "schedule": {"kind": "cosine", "warmup_steps": 2},
                "final_eval_documents": 2}
    if stage == "sft":
        return {"model": str(base), "data": {"sources": [{"path": f"{world}/instructions/train.jsonl"}], "seq_len": 192},
                "train": train, "optim": {"lr": 2e-3}}
    if stage == "rm":
        return {"model": str(base), "data": {"sources": [{"path": f"{world}/preferences/pairs_train.jsonl"}],
                                             "max_length": 256}, "train": train, "optim": {"lr": 1e-4}}
    if stage == "dpo":
        return {"model": str(base), "data": {"sources": [{"path": f"{world}/preferences/pairs_train.jsonl"}],
                                             "max_length": 256}, "train": train, "optim": {"lr": 1e-4}}
    if stage in ("ppo", "grpo"):  # rollouts of the world's verifiable prompts, scored by the gold reward
        train.update(micro_batch_size=2, grad_accum_steps=2)
        return {"model": str(base), "train": train, "optim": {"lr": 1e-3},
                "prompts": {"train": f"{world}/verifiable/train.jsonl", "test": f"{world}/verifiable/test.jsonl",
                            "max_test": 3},
                "rollout": {"prompts_per_rollout": 4, "samples_per_prompt": 2, "epochs": 2,
                            "sampling": {"max_new_tokens": 6}},
                "eval": {"samples": 2, "greedy": False, "sampling": {"max_new_tokens": 6}}}
    raise SystemExit(f"no config for stage {stage!r}")


def chatforge(*args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(log, "ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "chatforge", *args], stdout=fh, stderr=subprocess.STDOUT, env=env)


def run_to_end(args: list[str], log: Path) -> float:
    start = time.monotonic()
    code = chatforge(*args, log=log).wait()
    if code != 0:
        raise SystemExit(f"`chatforge {' '.join(args)}` failed with exit {code}; see {log}")
    return time.monotonic() - start


def build_inputs(inputs: Path) -> None:
    if (inputs / "base" / "final").is_dir():
        return
    inputs.mkdir(parents=True, exist_ok=True)
    log = inputs / "build.log"
    run_to_end(["world", "write", f"out={inputs / 'world'}", "size=tiny"], log)
    run_to_end(["tokenizer", f"out={inputs / 'tokenizer'}", "vocab_size=400",
                f"sources=[{{path: {inputs / 'world/pretrain/world_a_train.jsonl'}}}, "
                f"{{path: {inputs / 'world/instructions/train.jsonl'}, content: chat}}]"], log)
    base = stage_config("pretrain", inputs)
    base["train"].update(max_steps=12, save_every=0)
    config = inputs / "base.yaml"
    config.write_text(yaml.safe_dump(base))
    run_to_end(["pretrain", str(config), f"out={inputs / 'base'}"], log)


def losses(run: Path) -> dict[int, float]:
    """step -> loss; a later row for a step (the resumed run's) replaces an earlier one."""
    out: dict[int, float] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line the kill cut short (the resumed run drops it too)
        if "loss" in row:
            out[row["step"]] = row["loss"]
    return out


def same_weights(a: Path, b: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    x, y = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def in_checkpoint_write(run: Path) -> bool:
    """Whether a hidden temporary checkpoint directory was left: the kill came during a checkpoint write."""
    return any((run / "checkpoints").glob(".tmp-step_*"))


def in_final_write(run: Path) -> bool:
    """Whether atomic_dir's temporary of final/ was left: the kill came while final/ was written."""
    return any(run.glob(".final.tmp-*"))


WRITES = {"checkpoint_write": "checkpoints/.tmp-step_*", "final_write": ".final.tmp-*"}


def kill_when_writing(proc: subprocess.Popen, run: Path, pattern: str, skip: int) -> float | None:
    """SIGKILL `proc` as soon as a temporary matching `pattern` appears (after `skip` earlier writes);
    the seconds it ran, or None when it finished first. Polled every millisecond."""
    start, seen = time.monotonic(), 0
    current = {p.name for p in run.glob(pattern)}  # left by an earlier kill: not this run's write
    while proc.poll() is None:
        now = {p.name for p in run.glob(pattern)}
        if now - current:
            seen += 1
            if seen > skip:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return time.monotonic() - start
        current = now
        time.sleep(0.001)
    return None


def trial(stage: str, config: Path, run: Path, kills: int, budget_s: float, rng: random.Random, mode: str) -> dict:
    log = run.parent / f"{run.name}.log"
    args = [stage, str(config), f"out={run}"]
    report = {"kills": 0, "during_checkpoint_write": 0, "during_final_write": 0}
    for _ in range(kills):
        proc = chatforge(*args, log=log)
        if mode in WRITES:  # the k-th write of its kind, at random
            writes = STEPS[stage] // 2  # checkpoints of the run (save_every=2)
            delay = kill_when_writing(proc, run, WRITES[mode], rng.randint(0, min(2, writes - 1)) if mode == "checkpoint_write" else 0)
            if delay is None:
                break
        else:
            delay = rng.uniform(0.0, budget_s)
            try:
                proc.wait(timeout=delay)  # finished before the kill came
                break
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        report["kills"] += 1
        report["during_checkpoint_write"] += in_checkpoint_write(run)
        report["during_final_write"] += in_final_write(run)
        report.setdefault("kill_times_s", []).append(round(delay, 2))
    run_to_end(args, log)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/faults")
    parser.add_argument("--stages", nargs="+", default=["pretrain", "sft", "rm", "dpo"], choices=sorted(STEPS))
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--max-kills", type=int, default=2, help="kills per trial: 1..this, uniformly")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", nargs="+", default=["random"], choices=["random", *WRITES],
                        help="when trial t kills: modes[t % len(modes)]: at a random time, or the moment a "
                             "checkpoint (or final/) is being written")
    args = parser.parse_args(argv)
    from chatforge.atomic_dir import check_complete

    rng = random.Random(args.seed)
    out = Path(args.out)
    build_inputs(out / "inputs")
    rows = []
    for stage in args.stages:
        root = out / stage
        root.mkdir(parents=True, exist_ok=True)
        config = root / "config.yaml"
        config.write_text(yaml.safe_dump(stage_config(stage, out / "inputs")))
        reference = root / "reference"
        if not (reference / "final").is_dir():
            seconds = run_to_end([stage, str(config), f"out={reference}"], root / "reference.log")
            (root / "reference_seconds").write_text(f"{seconds:.2f}\n")
        budget = float((root / "reference_seconds").read_text())
        ref_losses = losses(reference)
        passed = kills = in_write = in_final = 0
        for t in range(args.trials):
            run = root / f"trial_{t}"
            if run.exists():
                raise SystemExit(f"{run} exists: give a fresh --out")
            mode = args.modes[t % len(args.modes)]
            result = trial(stage, config, run, rng.randint(1, args.max_kills), budget, rng, mode)
            check_complete(run / "final")
            ok_weights, ok_losses = same_weights(reference, run), losses(run) == ref_losses
            passed += ok_weights and ok_losses
            kills += result["kills"]
            in_write += result["during_checkpoint_write"]
            print(f"{stage} trial {t} ({mode}): killed at {result.get('kill_times_s', [])} s "
                  f"({result['during_checkpoint_write']} during a checkpoint write, {result['during_final_write']} "
                  f"during the final/ write); final weights "
                  f"{'bit-identical' if ok_weights else 'DIFFERENT'}; losses {'equal' if ok_losses else 'DIFFERENT'}",
                  flush=True)
            in_final += result["during_final_write"]
        rows.append((stage, args.trials, kills, in_write, in_final, passed, budget))
    print("\n| stage | trials | SIGKILLs | during a checkpoint write | during the final/ write | identical final weights "
          "and losses | reference run (s) |")
    print("|---|---|---|---|---|---|---|")
    for stage, trials, k, w, f, p, seconds in rows:
        print(f"| {stage} | {trials} | {k} | {w} | {f} | {p} of {trials} | {seconds:.1f} |")
    return 0 if all(row[5] == row[1] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
