"""The two kernels behind the fast decoder, timed in isolation, side by side.

    .venv/bin/python bench/decode_kernels.py                  # llama-10m shapes, 8 rows, 1 and 2 threads
    .venv/bin/python bench/decode_kernels.py --rows 32 --threads 2

1. Linears: the products of one decode step of the preset (q/k/v fused, o, gate/up fused, down per
   layer, then the LM head) at `--rows` rows, with the weights as `F.linear` sees them (MKL sgemm,
   packing the weight on every call), MKL-packed once (`_mkl_linear`, bit-identical to `F.linear`) and
   oneDNN-packed once (`_linear_pointwise`, what the fast decoder uses). Random weights of the preset's
   shapes; all of them are cycled through per step, like a real step, so they do not sit in cache.
2. top-p: `torch.sort` of the rows (what a sort-based nucleus needs) against
   `chatforge.sampling.sampler.nucleus_threshold` (radix selection), on softmaxed random logits of the
   preset's vocabulary size.

Medians of `--repeats` rounds; each round runs every variant back to back. The ratios are measurements:
the script exits 0 whatever they are.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from chatforge.models.presets import PRESETS
from chatforge.sampling.fast_decode import available_kernel
from chatforge.sampling.sampler import nucleus_threshold


def step_shapes(preset: str, vocab: int) -> list[tuple[int, int]]:
    """(out, in) of every product in one decode step of `preset`."""
    p = PRESETS[preset]
    hidden, heads, ffn = p.hidden_size, p.num_heads, p.intermediate_size
    head_dim = hidden // heads
    qkv = (heads + 2 * p.num_kv_heads) * head_dim
    layer = [(qkv, hidden), (hidden, heads * head_dim), (2 * ffn, hidden), (hidden, ffn)]
    return layer * p.num_layers + [(vocab, hidden)]


def timed(fn, calls: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="llama-10m")
    ap.add_argument("--vocab", type=int, default=6704, help="LM head rows (the bench tokenizer's vocabulary)")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    shapes = step_shapes(args.preset, args.vocab)
    weights = [torch.randn(n, k) * k**-0.5 for n, k in shapes]
    inputs = [torch.randn(args.rows, k) for _, k in shapes]
    variants = {"F.linear": lambda: [F.linear(x, w) for x, w in zip(inputs, weights)]}
    if torch.backends.mkl.is_available():
        mkl = [torch.ops.mkl._mkl_reorder_linear_weight(w, args.rows) for w in weights]
        variants["MKL packed"] = lambda: [
            torch.ops.mkl._mkl_linear(x, p, w, None, args.rows) for x, p, w in zip(inputs, mkl, weights)
        ]
    if available_kernel() == "onednn":
        dnn = [torch.ops.mkldnn._reorder_linear_weight(w, args.rows) for w in weights]
        variants["oneDNN packed"] = lambda: [
            torch.ops.mkldnn._linear_pointwise(x, p, None, "none", [], "") for x, p in zip(inputs, dnn)
        ]
    probs = (torch.randn(args.rows, args.vocab) * 2).softmax(-1)
    top_p = {
        "torch.sort": lambda: torch.sort(probs, dim=-1, descending=True),
        "nucleus_threshold": lambda: nucleus_threshold(probs, 0.9),
    }
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{args.preset}: {len(shapes)} products per step ({sum(n * k for n, k in shapes) / 1e6:.1f}M weights), "
        f"{args.rows} rows; top-p over {args.rows} x {args.vocab}; torch {torch.__version__}; load average {load:.2f}"
    )
    for threads in args.threads:
        torch.set_num_threads(threads)
        for title, group, calls in (("linears of one step", variants, 10), ("top-p 0.9 threshold", top_p, 50)):
            times: dict[str, list[float]] = {name: [] for name in group}
            for _ in range(args.repeats):
                for name, fn in group.items():
                    times[name].append(timed(fn, calls))
            base_name = next(iter(group))
            base = statistics.median(times[base_name])
            cells = ", ".join(
                f"{name} {statistics.median(t):.2f} ms ({base / statistics.median(t):.2f}x)" for name, t in times.items()
            )
            print(f"{threads} thread(s), {title}: {cells}  [speed-up vs {base_name}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
