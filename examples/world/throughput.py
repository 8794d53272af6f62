"""Training tokens/s on CPU for tiny shapes: preset x vocabulary x row length x torch.compile.

    OMP_NUM_THREADS=2 python examples/world/throughput.py [--steps 6] [--compile]

One AdamW step = forward + backward + update on `rows x seq_len` random tokens, the work of a
`chatforge pretrain` step without data loading. The first 2 steps (warm-up, compilation) are not
timed. Prints a markdown table (docs/world.md, "Throughput").
"""

from __future__ import annotations

import argparse
import time

import torch

from chatforge.models.presets import hf_config

SPECIAL = {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}


def tokens_per_second(preset: str, vocab: int, seq_len: int, tokens_per_step: int, steps: int, compile_: bool) -> float:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config(preset, vocab, SPECIAL, {}), attn_implementation="sdpa")
    if compile_:
        model.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rows = tokens_per_step // seq_len
    batch = torch.randint(6, vocab, (rows, seq_len))
    elapsed = 0.0
    for step in range(steps + 2):
        start = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 2:
            elapsed += time.perf_counter() - start
    return rows * seq_len * steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--tokens-per-step", type=int, default=4096)
    parser.add_argument("--presets", default="llama-1m,llama-3m,llama-10m")
    parser.add_argument("--vocabs", default="1024,4096")
    parser.add_argument("--seq-lens", default="128,256")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()
    print(f"threads {torch.get_num_threads()}, {args.tokens_per_step} tokens per step, {args.steps} timed steps\n")
    print("| preset | vocab | seq_len | compile | tokens/s |\n|---|---|---|---|---|")
    for preset in args.presets.split(","):
        for vocab in map(int, args.vocabs.split(",")):
            for seq_len in map(int, args.seq_lens.split(",")):
                for compile_ in (False, True) if args.compile else (False,):
                    rate = tokens_per_second(preset, vocab, seq_len, args.tokens_per_step, args.steps, compile_)
                    print(f"| {preset} | {vocab} | {seq_len} | {compile_} | {rate:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
