"""Does sharing decode steps pay on CPU? The server's two ways of answering K waiting requests, timed.

    python bench/serve_batching.py MODEL_DIR [--requests 16] [--max-tokens 32] [--repeats 3]

(a) alone: K `Sampler.generate` calls of one prompt each (what `--max-batch 1` does);
(b) shared: one call with the K prompts, one forward per step for all rows (what the worker does
    with requests of the same settings waiting together; docs/serving.md "Batching").
Greedy, every sample runs exactly --max-tokens (no stop ids), chat prompts of different lengths.
The two are interleaved (a b a b ...) so that other load on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from chatforge.sampling import Sampler, SamplingConfig, chat_prompt
from chatforge.serve.server import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model, tokenizer = load_model(args.model_dir, "cpu", "float32")
    sampler = Sampler(model, tokenizer)
    prompts = [chat_prompt(tokenizer, [{"role": "user", "content": f"Question number {i}: " + "tell me more " * (i % 4)}])
               for i in range(args.requests)]
    cfg = SamplingConfig(temperature=0, max_new_tokens=args.max_tokens, stop_token_ids=[])
    sampler.generate(prompts[:2], cfg)  # warm up (weight packing, allocator)
    alone, shared = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for p in prompts:
            sampler.generate([p], cfg)
        alone.append(time.perf_counter() - start)
        start = time.perf_counter()
        sampler.generate(prompts, cfg)
        shared.append(time.perf_counter() - start)
    tokens = args.requests * args.max_tokens
    a, s = statistics.median(alone), statistics.median(shared)
    print(f"{args.requests} requests x {args.max_tokens} tokens, torch threads {torch.get_num_threads()}: "
          f"alone {a:.2f} s ({tokens / a:.0f} tokens/s), shared {s:.2f} s ({tokens / s:.0f} tokens/s), "
          f"speed-up x{a / s:.1f} (medians of {args.repeats}; alone {[round(x, 2) for x in alone]}, "
          f"shared {[round(x, 2) for x in shared]})")


if __name__ == "__main__":
    main()
