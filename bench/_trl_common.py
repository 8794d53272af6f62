"""Shared pieces of the chatforge-vs-TRL benchmarks (`bench/dpo_vs_trl.py`, `bench/rm_vs_trl.py`).

Only the standard library at module level: the TRL children import this file from bench/.venv-trl,
which has no chatforge. The chatforge-only helpers import chatforge inside their bodies.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_TRL_PYTHON = HERE / ".venv-trl" / "bin" / "python"
DEFAULT_PAIRS = HERE.parent / "runs" / "continual" / "world" / "preferences" / "pairs_train.jsonl"


# ---- memory and clocks ------------------------------------------------------------------------------
def rss_now_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class StepClock:
    """One `perf_counter` stamp per optimizer step (and one of the process's CPU time, all its threads:
    a second witness of load spikes, which inflate it too, less than the wall time), the per-step data
    counts and the logged values."""

    def __init__(self):
        self.stamps: list[float] = []
        self.cpu_stamps: list[float] = []
        self.counts: list[list[int]] = []
        self.logs: list[dict[str, float]] = []
        self.extra: dict[str, float] = {}
        self.rss_start = float("nan")

    def stamp(self) -> None:
        self.stamps.append(time.perf_counter())
        self.cpu_stamps.append(time.process_time())

    def result(self, spec: dict) -> dict:
        first, last = spec["warmup"], spec["warmup"] + spec["steps"]
        if len(self.stamps) <= last:
            raise RuntimeError(f"only {len(self.stamps)} steps were stamped, {last + 1} needed")
        return {
            "seconds": self.stamps[last] - self.stamps[first],
            "cpu_seconds": self.cpu_stamps[last] - self.cpu_stamps[first],
            "step_seconds": [b - a for a, b in zip(self.stamps[first:last], self.stamps[first + 1 : last + 1])],
            "counts": self.counts[:last],
            "logs": self.logs,
            "rss_start_mib": self.rss_start,
            "peak_rss_mib": peak_rss_mib(),
            **self.extra,
        }


def profiled(fn, path: Path) -> None:
    """Run `fn` under cProfile and write its top functions, by cumulative and by own time, to `path`."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(60)
    stream.write("\n---- by own time ----\n")
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(40)
    path.write_text(stream.getvalue())


# ---- TRL's LM head on CPU -------------------------------------------------------------------------
def add_plain_lm_head(model, outputs=("log_probs",), **_):
    """TRL's `fused_lm_head=True` call answered from the model's full logits (`--trl-head plain`).

    TRL 1.x computes per-token log-probs through a chunked kernel (`trl.kernels.chunked_logprob`): Triton
    on CUDA; on CPU a torch fallback over every position (prompt and padding included) in several
    element-wise passes per vocabulary tile. This replacement returns the same fields (`log_probs`,
    `entropy`, `mean_logits`, `is_top1`, `log_sum_sq_probs`, `label_mask`, `loss`) from one
    `log_softmax` over the full logits, as a plain `transformers` loss does.
    """
    import functools
    import types

    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    original = model.forward

    @functools.wraps(type(model).forward)
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head:
            extra = {"labels": labels, "shift_labels": shift_labels, "num_items_in_batch": num_items_in_batch}
            return original(*args, **kwargs, **{k: v for k, v in extra.items() if v is not None})
        kwargs["use_cache"] = False
        logits = original(*args, **kwargs).logits
        if shift_labels is None:
            logits, labels = logits[:, :-1], labels[:, 1:]
        else:
            labels = shift_labels
        mask = labels != -100
        log_probs_all = logits.float().log_softmax(-1)
        log_probs = log_probs_all.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1).masked_fill(~mask, 0.0)
        fields = {}
        with torch.no_grad():
            if "entropy" in outputs:
                fields["entropy"] = -(log_probs_all.exp() * log_probs_all).sum(-1).masked_fill(~mask, 0.0)
            if "is_top1" in outputs:
                fields["is_top1"] = (log_probs_all.argmax(-1) == labels) & mask
            if "mean_logits" in outputs:
                fields["mean_logits"] = logits.float().mean(-1).masked_fill(~mask, 0.0)
            if "log_sum_sq_probs" in outputs:
                fields["log_sum_sq_probs"] = torch.logsumexp(2 * log_probs_all, -1).masked_fill(~mask, 0.0)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-log_probs.sum() / count, log_probs=log_probs, label_mask=mask, **fields)

    model.forward = types.MethodType(forward, model)


# ---- the parent ------------------------------------------------------------------------------------
def build_tiny_model(args: argparse.Namespace, model_dir: Path):
    """Tokenizer (byte-level BPE, chatforge's ChatML template with `{% generation %}` blocks) and a model
    from a chatforge preset with a fixed seed, saved to `model_dir`, as bench/sft_vs_trl.py builds them.
    Returns (tokenizer, model)."""
    from transformers.utils import logging as hf_logging

    from chatforge.models.build import ModelConfig, build_model
    from chatforge.run_dir import RejectLog
    from chatforge.tokenizer.load import load_tokenizer
    from chatforge.tokenizer.train import TokenizerConfig, save_tokenizer, train_tokenizer

    hf_logging.disable_progress_bar()
    tok_cfg = TokenizerConfig(vocab_size=args.vocab_size, max_documents=args.tokenizer_documents, out=str(model_dir))
    save_tokenizer(train_tokenizer(tok_cfg, RejectLog(None)), model_dir)
    tokenizer = load_tokenizer(model_dir)
    model = build_model(ModelConfig(preset=args.preset), tokenizer, seed=args.seed)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return tokenizer, model


def world_file(path: Path, workdir: Path, relative: str, what: str) -> Path:
    """`path`, or the file `relative` of a small task world written to `workdir` when `path` is missing."""
    if path.exists():
        return path
    from chatforge.world.write import write_world

    print(f"{path} not found: writing a small task world to use its {what}", flush=True)
    write_world(workdir / "world", size="small")
    return workdir / "world" / relative


def pairs_file(args: argparse.Namespace, workdir: Path) -> Path:
    """`--pairs`, or the pairs of a small task world written to `workdir` when that file is missing."""
    return world_file(args.pairs, workdir, "preferences/pairs_train.jsonl", "pairs")


def add_common_args(p: argparse.ArgumentParser, batch_size: int, steps: int) -> None:
    p.add_argument("--preset", default="llama-10m", help="chatforge model preset (llama-1m, llama-10m, ...)")
    p.add_argument("--vocab-size", type=int, default=8192, help="vocabulary of the tokenizer trained for the run")
    p.add_argument("--tokenizer-documents", type=int, default=2000, help="documents the tokenizer is trained on")
    p.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS,
                   help="preference pairs (prompt messages, chosen, rejected); default: the task world's training pairs "
                        "under runs/continual (a small world is written when missing)")
    p.add_argument("--max-length", type=int, default=512, help="tokens per conversation (prompt + one answer), both sides")
    p.add_argument("--batch-size", type=int, default=batch_size, help="pairs per optimizer step (both sides)")
    p.add_argument("--steps", type=int, default=steps, help="timed optimizer steps per run")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of every run")
    p.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating their order")
    p.add_argument("--seed", type=int, default=1234, help="seed for the weights and the data order")
    p.add_argument("--trl-python", default=str(DEFAULT_TRL_PYTHON), help="python of the TRL venv (bench/trl_env.sh)")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)


def check_common_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("vocab_size", "max_length", "batch_size", "steps", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")


def check_trl_env(python: str) -> str | None:
    """None when `python` can import trl, else why not."""
    if not Path(python).exists():
        return f"{python} does not exist"
    probe = subprocess.run([python, "-c", "import trl, datasets, transformers"], capture_output=True, text=True)
    return None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["import failed"])[-1]


def missing_trl_message(problem: str) -> str:
    return (f"error: no TRL environment ({problem}).\nCreate it with:  bash bench/trl_env.sh\n"
            "(or pass --trl-python PATH to a python that has trl installed)")


def trl_versions(python: str) -> tuple[str, str]:
    out = subprocess.run([python, "-c", "import trl, transformers; print(trl.__version__, transformers.__version__)"],
                         capture_output=True, text=True).stdout.split()
    return (out[0], out[1]) if len(out) == 2 else ("?", "?")


def run_child(script: Path, side: str, python: str, spec_path: Path, result_path: Path, cache_dir: Path) -> dict:
    """Run `script --child side` in its own process; a fresh datasets cache per run, so that no run reuses
    another's (TRL caches precomputed reference log-probs there, keyed by data and weights)."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_DATASETS_CACHE=str(cache_dir), TQDM_DISABLE="1")
    cmd = [python, str(script), "--child", side, "--spec", str(spec_path), "--result", str(result_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"error: the {side} run failed (exit {proc.returncode}); its output is above")
    return json.loads(result_path.read_text())


def alternating_runs(script: Path, sides: list[str], pythons: dict[str, str], spec_path: Path, workdir: Path,
                     repeats: int, describe) -> dict[str, list[dict]]:
    """Every side `repeats` times, the order reversed on every other repeat; `describe(side, result)` is
    printed after each run."""
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for rep in range(repeats):
        order = sides if rep % 2 == 0 else list(reversed(sides))
        for side in order:
            r = run_child(script, side, pythons[side], spec_path, workdir / f"{side}-{rep}.json",
                          workdir / f"hf-cache-{side}-{rep}")
            runs[side].append(r)
            print(f"  repeat {rep + 1}/{repeats} {side:16s} {describe(side, r)}", flush=True)
    return runs


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"
