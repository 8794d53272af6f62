"""GPU throughput and MFU: chatforge's engine vs a bare PyTorch loop, bf16, packed sequences, one run.

    .venv/bin/python bench/gpu_mfu.py                                   # llama-125m and llama-1b on CUDA
    .venv/bin/python bench/gpu_mfu.py --models llama-1b --compile --json runs/gpu_mfu.json
    .venv/bin/python bench/gpu_mfu.py --models /path/to/hf_model_dir --seq-len 4096
    .venv/bin/python bench/gpu_mfu.py --device cpu --tiny               # CPU smoke: the same code path

For each model (a preset name or a local Hugging Face causal-LM directory) the script builds the
model once and trains deep copies of it for `--warmup + --steps` optimizer steps on the same list of
packed batches: rows of `--seq-len` tokens holding several random-length documents each, with
restarting position ids and the boundary labels ignored (`chatforge.data.packing.window_tensors`, as
pretraining builds them), so attention is block-diagonal. Two loops, alternating order over
`--repeats`, as in `bench/engine_vs_bare.py`, whose pieces this script reuses (batch replay, clock,
the bare loop, the engine run):
  (a) `chatforge.engine.loop.Engine` with the pretrain objective (bf16 autocast on CUDA, fused AdamW,
      clipping, metrics.jsonl every step), and
  (b) the bare loop: forward with the same position ids, mean cross-entropy, backward, clip, AdamW.
With `--attn flash_attention_2` each micro-batch is one row of `batch x seq_len` tokens (the
FlashAttention varlen path detects packed documents only in a batch of one row).

Printed per model and loop: tokens/s (median over repeats), ms per step, MFU, peak memory, and the
engine / bare ratio. MFU = training FLOPs per token (`chatforge.models.build.flops_per_token`:
6 N + 12 L d T, the PaLM convention, which counts full causal attention over `--seq-len` even
though packed documents attend to less) x tokens/s / the device's dense bf16 peak. The peak comes
from `chatforge.engine.hardware`'s table of data-sheet numbers (H100/H200 989 TFLOP/s), or
`--peak-tflops`; on CPU it is a measured fp32 matmul (there is no data sheet to read). Targets
(issue 23): >= 45% MFU for llama-1b on an H100/H200-class GPU; engine >= 0.97x bare.

Exit status 0 whatever the numbers are; 1 when the two loops' first losses disagree (they must
compute the same thing) or a model does not fit.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from pydantic import TypeAdapter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_vs_bare import _Vocab, matmul_peak_tflops, resolve_device, run_bare, run_engine  # noqa: E402

from chatforge.data.packing import window_tensors  # noqa: E402
from chatforge.engine.config import OptimConfig, TrainConfig  # noqa: E402
from chatforge.engine.hardware import PeakMemory, gpu_peak_tflops  # noqa: E402
from chatforge.engine.schedules import ScheduleConfig, lr_at  # noqa: E402
from chatforge.models.build import ModelConfig, build_model, count_parameters, flops_per_token  # noqa: E402
from chatforge.models.presets import PRESETS  # noqa: E402

FIRST_STEPS = 3
LOSS_TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2}  # bf16 logits round differently in two separate runs
TINY = {"models": ["llama-1m"], "seq_len": 64, "batch_size": 2, "steps": 3, "warmup": 1, "repeats": 1, "vocab_size": 512, "mean_doc": 16}


def packed_batches(n: int, rows: int, seq_len: int, vocab: int, seed: int, mean_doc: int) -> list[dict[str, torch.Tensor]]:
    """`n` batches of `rows` packed rows: documents of random length (1 .. 2 x mean_doc) back to back."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n):
        parts = []
        for _ in range(rows):
            lengths = []
            while sum(lengths) < seq_len + 1:
                lengths.append(int(rng.integers(1, 2 * mean_doc + 1)))
            window = rng.integers(0, vocab, size=seq_len + 1)
            starts = np.cumsum([0, *lengths[:-1]])
            parts.append(window_tensors(window, starts, 0, "isolated"))
        batches.append({k: torch.from_numpy(np.stack([p[k] for p in parts])) for k in parts[0]})
    return batches


def as_one_row(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The rows of a packed micro-batch end to end (FlashAttention's varlen path needs one row)."""
    return {k: v.reshape(1, -1) for k, v in batch.items()}


def device_peak_tflops(device: torch.device, override: float | None, peak_size: int) -> tuple[float, str]:
    """(TFLOP/s, where it came from): the override, the data-sheet table for CUDA, a measurement on CPU."""
    if override is not None:
        return override, "--peak-tflops"
    if device.type == "cuda":
        table = gpu_peak_tflops(device)
        if table is None:
            raise SystemExit(f"{torch.cuda.get_device_name(device)} is not in chatforge.engine.hardware's table; "
                             "give its dense bf16 peak with --peak-tflops")
        return table, f"data sheet, dense bf16 ({torch.cuda.get_device_name(device)})"
    return matmul_peak_tflops(device, peak_size), f"measured fp32 matmul {peak_size}x{peak_size}"


def build(name: str, vocab: int, attn: str, seed: int) -> torch.nn.Module:
    if Path(name).is_dir():  # its own vocabulary; the batches draw ids below min(its size, --vocab-size)
        return build_model(ModelConfig(path=name, attn_implementation=attn), _Vocab(1))
    return build_model(ModelConfig(preset=name, attn_implementation=attn), _Vocab(vocab), seed=seed)


def bench_model(name: str, args: argparse.Namespace, device: torch.device, peak: float) -> dict:
    bf16 = device.type == "cuda"
    base = build(name, args.vocab_size, args.attn, args.seed)
    vocab = base.get_input_embeddings().num_embeddings
    fpt = flops_per_token(base, args.seq_len)
    timed = (args.warmup, args.warmup + args.steps)
    total_steps = timed[1] + 1  # the engine's extra last step carries its final checkpoint save
    batches = packed_batches(total_steps, args.batch_size, args.seq_len, min(vocab, args.vocab_size), args.seed, args.mean_doc)
    if args.attn == "flash_attention_2":
        batches = [as_one_row(b) for b in batches]
    tokens_per_step = args.batch_size * args.seq_len
    optim = OptimConfig(implementation="fused")
    schedule = TypeAdapter(ScheduleConfig).validate_python({"kind": "cosine", "warmup_steps": max(args.warmup, 1)})
    lrs = [lr_at(schedule, step, total_steps, optim.lr) for step in range(total_steps)]
    train = TrainConfig(
        max_steps=total_steps, micro_batch_size=args.batch_size, seed=args.seed, device=str(device), eval_every=0,
        save_every=0, resume="never", progress=False, peak_tflops=peak, compile=args.compile,
    )
    print(f"\n{name}: {count_parameters(base) / 1e6:.1f}M parameters, {fpt / 1e9:.2f} GFLOP/token | "
          f"{args.batch_size} x {args.seq_len} packed tokens/step (documents ~{args.mean_doc} tokens), {args.steps} timed + "
          f"{args.warmup} warm-up steps, {args.repeats} repeats | {args.attn}{', compiled' if args.compile else ''}", flush=True)
    seconds: dict[str, list[float]] = {"bare": [], "engine": []}
    memory: dict[str, list[int]] = {"bare": [], "engine": []}
    first_diff = max_diff = 0.0
    for rep in range(args.repeats):
        losses = {}
        for loop in ("bare", "engine") if rep % 2 == 0 else ("engine", "bare"):
            gc.collect()  # the previous run's model and optimizer state, before this run's memory is measured
            if device.type == "cuda":
                torch.cuda.empty_cache()
            meter = PeakMemory(device)
            meter.start()
            if loop == "engine":
                steps, losses[loop] = run_engine(base, batches, timed, device, train, optim, schedule, fpt)
            else:
                steps, losses[loop] = run_bare(base, batches, timed, device, lrs, optim, bf16, compile=args.compile)
            used = meter.result()
            memory[loop].append(used["peak_bytes"] - (0 if device.type == "cuda" else used["start_bytes"]))
            seconds[loop].append(sum(steps))
            print(f"  repeat {rep + 1}/{args.repeats} {loop:6s} {args.steps * tokens_per_step / sum(steps):12,.0f} tok/s", flush=True)
        diffs = [abs(a - b) for a, b in zip(losses["engine"], losses["bare"])]
        first_diff, max_diff = max(first_diff, *diffs[:FIRST_STEPS]), max(max_diff, *diffs)
    rows = {}
    for loop in ("bare", "engine"):
        tok_s = statistics.median(args.steps * tokens_per_step / s for s in seconds[loop])
        rows[loop] = {"tokens_per_s": tok_s, "ms_per_step": 1000 * tokens_per_step / tok_s,
                      "mfu": fpt * tok_s / (peak * 1e12), "peak_memory_bytes": max(memory[loop])}
    ratio = rows["engine"]["tokens_per_s"] / rows["bare"]["tokens_per_s"]
    return {"model": name, "parameters": count_parameters(base), "flops_per_token": fpt, "loops": rows, "ratio": ratio,
            "max_loss_diff_first_steps": first_diff, "max_loss_diff": max_diff, "precision": "bf16" if bf16 else "fp32"}


def print_table(results: list[dict], peak: float, source: str) -> None:
    print(f"\npeak: {peak:.4g} TFLOP/s ({source})")
    print(f"{'model':14s} {'loop':7s} {'tokens/s':>12s} {'ms/step':>9s} {'MFU':>7s} {'peak mem':>10s} {'engine/bare':>12s}")
    for r in results:
        for loop in ("bare", "engine"):
            x = r["loops"][loop]
            ratio = f"{r['ratio']:.3f}" if loop == "engine" else ""
            print(f"{Path(r['model']).name:14s} {loop:7s} {x['tokens_per_s']:12,.0f} {x['ms_per_step']:9.1f} "
                  f"{100 * x['mfu']:6.1f}% {x['peak_memory_bytes'] / 2**30:8.2f} GiB {ratio:>12s}")
    print("targets: >= 45% MFU for llama-1b on H100/H200; engine / bare >= 0.97. Loss agreement: " + ", ".join(
        f"{Path(r['model']).name} {r['max_loss_diff_first_steps']:.1e}" for r in results))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["llama-125m", "llama-1b"], help=f"presets ({', '.join(PRESETS)}) or HF model dirs")
    p.add_argument("--seq-len", type=int, default=2048, help="tokens per packed row")
    p.add_argument("--batch-size", type=int, default=8,
                   help="packed rows per optimizer step (an out-of-memory model is reported and skipped: lower this)")
    p.add_argument("--mean-doc", type=int, default=512, help="mean document length inside a row")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of every run (compilation happens here)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each loop, alternating their order")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "flash_attention_2", "eager"], help="attention kernel")
    p.add_argument("--compile", action="store_true", help="torch.compile both loops' models")
    p.add_argument("--vocab-size", type=int, default=32000, help="vocabulary of presets and of the random token ids")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak (default: the table)")
    p.add_argument("--peak-size", type=int, default=2048, help="CPU only: side of the matmul that measures the peak")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--tiny", action="store_true", help="smoke settings: llama-1m, 2 x 64 tokens, 3 steps (use with --device cpu)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.tiny:
        given = {a.lstrip("-").split("=")[0].replace("-", "_") for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--")}
        for key, value in TINY.items():
            if key not in given:
                setattr(args, key, value)
    for name in ("seq_len", "batch_size", "steps", "repeats", "mean_doc"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here: nothing to measure (the CPU smoke test is --device cpu --tiny)")
        return 0
    if device.type == "cpu" and not args.tiny:
        print("note: on CPU this measures fp32 against a measured matmul peak, not the GPU path (use --tiny for a smoke run)")
    peak, source = device_peak_tflops(device, args.peak_tflops, args.peak_size)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{where} | torch {torch.__version__} | peak {peak:.4g} TFLOP/s ({source})", flush=True)
    results, failed = [], False
    for name in args.models:
        try:
            results.append(bench_model(name, args, device, peak))
        except torch.OutOfMemoryError as exc:
            print(f"{name}: out of memory at batch {args.batch_size} x {args.seq_len} ({str(exc).splitlines()[0]})")
            failed = True
            torch.cuda.empty_cache()
    if results:
        print_table(results, peak, source)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "device": where, "peak_tflops": peak, "peak_source": source, "torch": torch.__version__,
            "python": platform.python_version(), "args": {k: str(v) for k, v in vars(args).items()}, "results": results,
        }, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    for r in results:
        tolerance = LOSS_TOLERANCE[r["precision"]]
        if not r["max_loss_diff_first_steps"] <= tolerance:
            print(f"error: {r['model']}: the loops' first losses differ by {r['max_loss_diff_first_steps']:.2e} > {tolerance:.0e}",
                  file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
