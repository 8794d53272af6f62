"""Engine vs a bare PyTorch loop: the same model on the same batches, side by side, in one run.

    .venv/bin/python bench/engine_vs_bare.py                      # llama-10m, 8 x 256 tokens per step
    .venv/bin/python bench/engine_vs_bare.py --preset llama-1m --json runs/bench.json

What is compared. One model is built once; every run starts from a deep copy of its weights and
replays the same pre-generated list of batches (random token ids over a fixed vocabulary, so no
token is masked). The two loops:
  (a) `chatforge.engine.loop.Engine` with the pretrain stage's `LanguageModelling` objective, fed by a
      tiny `Batches` object that replays the list; defaults as a real run uses them (metrics.jsonl
      written every step), minus the progress bar, evaluation and periodic checkpoints;
  (b) a bare loop written out below: forward, mean `F.cross_entropy`, backward, `clip_grad_norm_`,
      AdamW step, `zero_grad`. Same AdamW kernel (fused/foreach, chosen once here and given to both),
      same weight-decay groups, same LR value set each step, same precision (bf16 autocast on CUDA,
      fp32 on CPU), same host-to-device copy of each batch. It keeps its losses as tensors and reads
      them after the timed region, so it never waits on the device: the best case the engine is held to.

How it is timed (the fair part). Both loops are timed on the wall clock over the same optimizer
steps, `[warmup, warmup + steps)`, with the device synchronised at both ends; the first `warmup` steps
(allocator, thread pools, kernel selection) are excluded from both. For the engine the clock is read
inside `next_batch`, which it calls once per step (no accumulation) at the start of the step, so the
span from the call for step `warmup` to the call for step `warmup + steps` covers `steps` whole
engine iterations: LR setting, forward/backward, gradient scaling, clipping, optimizer, metrics and
the metrics.jsonl write. The engine runs one step more than is timed, because it always saves a
checkpoint after its last step; that step and its save fall outside the timed span, as do building
the optimizer, the final plots and `fit()`'s start-up. Repetitions alternate the order (bare, engine,
engine, bare, ...) so slow drift from other load on the machine hits both loops alike; the table
reports the median tokens/s per loop and the ratio engine / bare of those medians; the ratio
within each repeat (the two runs back to back) and its median are printed too. On CPU, where the
clock can be read at every step without synchronising anything, the median single-step time of
each loop over all repeats gives a third ratio, one that a burst of other load during a few steps
does not move.

Same computation. After the runs, the per-step losses of the two loops (the engine's from its
metrics.jsonl) are compared step by step: the engine divides the summed token loss by the token
count, the bare loop takes the mean cross-entropy, which is the same number when no token is masked.
The first steps must agree within a small tolerance; the largest difference over all steps is printed.

MFU. The script measures this machine's matmul peak with a large square matmul (fp32 on CPU through
`chatforge.engine.hardware.measured_matmul_tflops`, best of 5 matmuls; bf16 on CUDA, the precision the
loops run in) before the first run and after every repeat, and takes the best measurement: other
load on the machine only ever lowers one, so the best is closest to the true ceiling.
MFU = model FLOPs per token (`chatforge.models.build.flops_per_token`: 6 N + attention) x tokens/s /
measured peak. A measured peak is what one large matmul reaches here, not the data-sheet number, so
MFU says how much of the practical ceiling the training step uses; small models with short sequences
stay below it (attention, norms, softmax, the loss and the optimizer are not large matmuls).

The ratio is a measurement, not a test: the script exits 0 whatever it is (the target is >= 0.95),
and non-zero only on errors, including the two loops computing different losses.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import TypeAdapter

from chatforge.engine.config import OptimConfig, TrainConfig
from chatforge.engine.hardware import measured_matmul_tflops
from chatforge.engine.log import read_metrics
from chatforge.engine.loop import Engine
from chatforge.engine.optim import parameter_groups
from chatforge.engine.schedules import ScheduleConfig, lr_at
from chatforge.models.build import ModelConfig, build_model, count_parameters, flops_per_token
from chatforge.models.presets import PRESETS
from chatforge.run_dir import RunDir
from chatforge.stages.pretrain import LanguageModelling

FIRST_STEPS = 3  # these steps' losses must agree within LOSS_TOLERANCE (later ones may drift apart slowly)
LOSS_TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2}


class _Vocab:
    """Stands in for a tokenizer where `build_model` needs only its size and special ids."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


class ReplayBatches:
    """The engine's `Batches`: replays a fixed list and reads the clock at the start of the timed steps."""

    def __init__(self, batches: list[dict[str, torch.Tensor]], timed: tuple[int, int], device: torch.device):
        self.batches, self.timed, self.device = batches, timed, device
        self.position = 0
        self.stamps: list[float] = []

    def next_batch(self) -> dict[str, torch.Tensor]:
        first, last = self.timed
        if first <= self.position <= last:
            # synchronise only at the ends: in between, the clock must not change what it measures
            ends = self.position in (first, last)
            self.stamps.append(clock(self.device) if ends else time.perf_counter())
        batch = self.batches[self.position]
        self.position += 1
        return batch

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]

    def step_seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def adamw_kwargs(optim: OptimConfig) -> dict:
    """The AdamW kernel the engine is configured with; the bare loop builds the same one."""
    impl = optim.implementation
    return {"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}


def make_batches(n: int, batch_size: int, seq_len: int, vocab: int, seed: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        windows = torch.randint(0, vocab, (batch_size, seq_len + 1), generator=gen)
        batches.append({"input_ids": windows[:, :-1].contiguous(), "labels": windows[:, 1:].contiguous()})
    return batches


def matmul_peak_tflops(device: torch.device, size: int, trials: int = 5) -> float:
    """Best TFLOP/s of `trials` timed square matmuls: fp32 on CPU, bf16 on CUDA (the loops' precision)."""
    if device.type == "cpu":
        # __wrapped__: the function caches its first result, and each call here must measure afresh
        return measured_matmul_tflops.__wrapped__(size=size, trials=trials, dtype=torch.float32)
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    torch.matmul(a, b)
    best = 0.0
    for _ in range(trials):
        start = clock(device)
        for _ in range(10):  # one GPU matmul is too short to time alone
            torch.matmul(a, b)
        best = max(best, 10 * 2 * size**3 / (clock(device) - start) / 1e12)
    return best


# ---- (a) the engine -------------------------------------------------------------------------------
def run_engine(base, batches, timed, device, train, optim, schedule, fpt) -> tuple[list[float], list[float]]:
    """Seconds of each timed step, and the loss of every step."""
    model = copy.deepcopy(base)
    replay = ReplayBatches(batches, timed, device)
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        run = RunDir.create(Path(tmp) / "run")
        engine = Engine(model, LanguageModelling(), replay, train, optim, schedule, run, evaluate=None,
                        flops_per_token=fpt, name="bench")
        engine.fit()
        losses = [row["loss"] for row in read_metrics(run.metrics) if "loss" in row]
    return replay.step_seconds(), losses


# ---- (b) the bare loop ----------------------------------------------------------------------------
def run_bare(base, batches, timed, device, lrs, optim, bf16, compile=False) -> tuple[list[float], list[float]]:
    """Seconds of each timed step, and the loss of every step (`compile`: as the engine's train.compile)."""
    model = copy.deepcopy(base).to(device)
    if compile:
        model.compile()
    model.train()
    optimizer = torch.optim.AdamW(
        parameter_groups(model, optim.weight_decay), lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps,
        **adamw_kwargs(optim),
    )
    first, last = timed
    losses, stamps = [], []
    for step in range(last):
        if step >= first:
            stamps.append(clock(device) if step == first else time.perf_counter())
        for group in optimizer.param_groups:
            group["lr"] = lrs[step]
        input_ids = batches[step]["input_ids"].to(device, non_blocking=True)
        labels = batches[step]["labels"].to(device, non_blocking=True)
        # packed rows (bench/gpu_mfu.py) carry restarting position ids; use_cache=False so that
        # transformers builds the block-diagonal mask from them, as the engine's forward does
        packed = {"position_ids": batches[step]["position_ids"].to(device, non_blocking=True), "use_cache": False} \
            if "position_ids" in batches[step] else {}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=input_ids, **packed).logits
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    stamps.append(clock(device))
    return [b - a for a, b in zip(stamps, stamps[1:])], [float(x) for x in losses]


# ---- the comparison ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="llama-10m", choices=sorted(PRESETS), help="model preset")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per sequence")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per step")
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of every run")
    p.add_argument("--repeats", type=int, default=3, help="runs of each loop, alternating their order")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--vocab-size", type=int, default=8192, help="vocabulary of the random token ids")
    p.add_argument("--peak-size", type=int, default=None, help="side of the matmul that measures the peak (2048 CPU, 8192 CUDA)")
    p.add_argument("--seed", type=int, default=1234, help="seed for the weights and the batches")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    for name in ("seq_len", "batch_size", "steps", "repeats", "vocab_size", "peak_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    bf16 = device.type == "cuda"  # the engine's precision "auto"
    base = build_model(ModelConfig(preset=args.preset), _Vocab(args.vocab_size), seed=args.seed)
    fpt = flops_per_token(base, args.seq_len)
    timed = (args.warmup, args.warmup + args.steps)
    total_steps = timed[1] + 1  # the engine's extra last step carries its final checkpoint save
    batches = make_batches(total_steps, args.batch_size, args.seq_len, args.vocab_size, args.seed)
    tokens_per_step = args.batch_size * args.seq_len

    optim = OptimConfig(implementation="fused" if device.type in ("cuda", "cpu") else "foreach")
    schedule = TypeAdapter(ScheduleConfig).validate_python({"kind": "cosine", "warmup_steps": args.warmup})
    lrs = [lr_at(schedule, step, total_steps, optim.lr) for step in range(total_steps)]
    peak_size = args.peak_size or (8192 if device.type == "cuda" else 2048)
    peaks = [matmul_peak_tflops(device, peak_size)]
    train = TrainConfig(
        max_steps=total_steps, micro_batch_size=args.batch_size, seed=args.seed, device=str(device),
        eval_every=0, save_every=0, resume="never", progress=False, peak_tflops=max(peaks),
    )
    print(
        f"{args.preset}: {count_parameters(base) / 1e6:.2f}M parameters, {fpt / 1e6:.1f} MFLOP/token | "
        f"{args.batch_size} x {args.seq_len} tokens/step, {args.steps} timed + {args.warmup} warm-up steps, "
        f"{args.repeats} repeats | {device} ({torch.get_num_threads()} threads), AdamW {optim.implementation}, "
        f"{'bf16' if bf16 else 'fp32'} | torch {torch.__version__}",
        flush=True,
    )

    seconds: dict[str, list[float]] = {"bare": [], "engine": []}  # timed span of each run
    step_seconds: dict[str, list[float]] = {"bare": [], "engine": []}  # every timed step, all runs
    max_diff, first_diff = 0.0, 0.0
    for rep in range(args.repeats):
        order = ("bare", "engine") if rep % 2 == 0 else ("engine", "bare")
        losses = {}
        for loop in order:
            if loop == "engine":
                steps, losses[loop] = run_engine(base, batches, timed, device, train, optim, schedule, fpt)
            else:
                steps, losses[loop] = run_bare(base, batches, timed, device, lrs, optim, bf16)
            secs = sum(steps)
            seconds[loop].append(secs)
            step_seconds[loop] += steps
            print(f"  repeat {rep + 1}/{args.repeats} {loop:6s} {args.steps * tokens_per_step / secs:10,.0f} tok/s", flush=True)
        diffs = [abs(a - b) for a, b in zip(losses["engine"], losses["bare"])]
        max_diff, first_diff = max(max_diff, *diffs), max(first_diff, *diffs[:FIRST_STEPS])
        peaks.append(matmul_peak_tflops(device, peak_size))
    peak = max(peaks)

    rows = {}
    for loop, secs in seconds.items():
        tok_s = [args.steps * tokens_per_step / s for s in secs]
        median = statistics.median(tok_s)
        rows[loop] = {
            "tokens_per_s": median,
            "ms_per_step": 1000 * tokens_per_step / median,
            "mfu": fpt * median / (peak * 1e12),
            "tokens_per_s_runs": tok_s,
            "median_step_ms": 1000 * statistics.median(step_seconds[loop]),
        }
    ratio = rows["engine"]["tokens_per_s"] / rows["bare"]["tokens_per_s"]
    paired = [b / e for b, e in zip(seconds["bare"], seconds["engine"])]
    step_ratio = rows["bare"]["median_step_ms"] / rows["engine"]["median_step_ms"]

    print(f"\nmatmul peak ({'bf16' if bf16 else 'fp32'}, {peak_size}x{peak_size}): {peak:.3f} TFLOP/s "
          f"(best of {len(peaks)} measurements before and between the runs; median {statistics.median(peaks):.3f})")
    print(f"{'loop':8s} {'tokens/s':>10s} {'ms/step':>9s} {'MFU':>7s} {'ratio':>6s}")
    for loop in ("bare", "engine"):
        r = rows[loop]
        print(f"{loop:8s} {r['tokens_per_s']:10,.0f} {r['ms_per_step']:9.1f} {100 * r['mfu']:6.1f}% "
              f"{r['tokens_per_s'] / rows['bare']['tokens_per_s']:6.3f}")
    print(
        f"engine / bare = {ratio:.3f} (target >= 0.95) | per repeat, each pair run back to back: "
        f"{', '.join(f'{x:.3f}' for x in paired)} (median {statistics.median(paired):.3f})"
    )
    if device.type == "cpu":  # on CUDA the steps between the synchronised ends are not timed one by one
        print(
            f"median single step over all {len(step_seconds['bare'])} timed steps per loop (robust to bursts of "
            f"other load): bare {rows['bare']['median_step_ms']:.1f} ms, engine {rows['engine']['median_step_ms']:.1f} ms"
            f" -> engine / bare = {step_ratio:.3f}"
        )
    print(f"max |loss engine - loss bare|: {first_diff:.2e} over the first {FIRST_STEPS} steps, "
          f"{max_diff:.2e} over all {timed[1]} steps")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "preset": args.preset, "parameters": count_parameters(base), "flops_per_token": fpt,
            "seq_len": args.seq_len, "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
            "repeats": args.repeats, "device": str(device), "threads": torch.get_num_threads(),
            "precision": "bf16" if bf16 else "fp32", "optimizer": optim.implementation,
            "torch": torch.__version__, "python": platform.python_version(),
            "peak_size": peak_size, "peak_tflops": peak, "peak_tflops_measurements": peaks, "loops": rows, "ratio": ratio,
            "ratio_per_repeat": paired, "ratio_per_repeat_median": statistics.median(paired),
            "ratio_median_step": step_ratio if device.type == "cpu" else None, "max_loss_diff": max_diff, "max_loss_diff_first_steps": first_diff,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")

    tolerance = LOSS_TOLERANCE["bf16" if bf16 else "fp32"]
    if not first_diff <= tolerance:
        print(f"error: the loops' first {FIRST_STEPS} losses differ by {first_diff:.2e} > {tolerance:.0e}; "
              "they do not compute the same thing", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
