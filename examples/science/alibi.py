"""Item 3 of docs/science.md: ALiBi vs RoPE past the training length, and MQA / GQA / MHA decoding.

    python examples/science/alibi.py [--seeds 0] [--steps 200] [--skip-decode]

Length: llama-1m (RoPE, 4 heads / 2 KV heads) and falcon-alibi-1m (ALiBi, 4 heads / 1 KV head),
same width and depth, trained on world A with rows of L = 64 tokens (16 rows per step, concat
packing: one causal row) for `--steps` steps. Each is scored on world A's held-out documents laid
end to end and cut into windows of 4L = 256 tokens: bits per byte of the tokens at positions
[0, L), [L, 2L), [2L, 4L) (a token's bytes are those of its own UTF-8 text; the tokenizer is
byte-level BPE, so they add up to the text's bytes).

Decoding: the llama-10m shape (6 layers, width 320, 8 query heads) with 8 (MHA), 2 (GQA) and 1
(MQA) KV heads, random weights: chatforge's Sampler generates 128 new tokens for 16 prompts of 64
tokens, greedy, timed over 3 alternating repeats (median tokens/s). The KV cache's size is measured
on the DynamicCache that the Sampler's transformers step fills for the same batch after 64 + 128 positions.
Writes runs/science/alibi/table.md and docs/img/science_alibi.png.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
from common import IMG, RUNS, WORLD, fmt, pretrain, setup, write_table

OUT = RUNS / "alibi"
L = 64
MODELS = {"RoPE (llama-1m)": "llama-1m", "ALiBi (falcon-alibi-1m)": "falcon-alibi-1m"}
BUCKET = 16


@torch.no_grad()
def per_position_bpb(model_dir, windows: int = 48) -> tuple[list[float], list[float]]:
    """(nats, bytes) summed per position 0..4L-1 over `windows` windows of the held-out stream."""
    from transformers import AutoModelForCausalLM

    from chatforge.tokenizer.load import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    stream: list[int] = []
    for line in (WORLD / "pretrain" / "world_a_valid.jsonl").read_text().splitlines():
        stream += tokenizer(json.loads(line)["text"])["input_ids"] + [tokenizer.eos_token_id]
    size = 4 * L + 1
    token_bytes = [len(tokenizer.decode([i]).encode("utf-8")) for i in range(len(tokenizer))]
    nats, nbytes = [0.0] * (4 * L), [0.0] * (4 * L)
    count = min(windows, len(stream) // size)
    for w in range(count):
        ids = torch.tensor(stream[w * size:(w + 1) * size])
        logits = model(input_ids=ids[None, :-1], use_cache=False).logits[0].float()
        nll = torch.nn.functional.cross_entropy(logits, ids[1:], reduction="none")
        for p in range(4 * L):
            nats[p] += float(nll[p])
            nbytes[p] += token_bytes[int(ids[p + 1])]
    return nats, nbytes


def bucket_bpb(nats, nbytes, lo, hi) -> float:
    return sum(nats[lo:hi]) / (math.log(2) * sum(nbytes[lo:hi]))


def length_experiment(seeds: list[int], steps: int) -> dict:
    scores: dict[str, list[tuple[list[float], list[float]]]] = {}
    for name, preset in MODELS.items():
        for seed in seeds:
            out = OUT / f"{preset}_s{seed}"
            pretrain(out, f"model.preset={preset}", f"data.seq_len={L}", "data.packing=concat", "train.micro_batch_size=16",
                     f"train.max_steps={steps}", f"train.seed={seed}", "train.eval_every=0")
            scores.setdefault(name, []).append(per_position_bpb(out / "final"))
    rows = []
    spans = [(0, L, f"[0, {L})"), (L, 2 * L, f"[{L}, {2 * L})"), (2 * L, 4 * L, f"[{2 * L}, {4 * L})")]
    for name, runs in scores.items():
        rows.append([name, *[fmt([bucket_bpb(n, b, lo, hi) for n, b in runs]) for lo, hi, _ in spans]])
    write_table(OUT / "length_table.md", ["model", *[f"bits/byte at positions {s}" for *_, s in spans]], rows,
                f"trained on rows of L = {L} tokens, {steps} steps x 16 rows; {len(seeds)} seed(s); world A held-out")
    return scores


def decode_experiment(repeats: int = 3) -> list[dict]:
    from common import TOKENIZER
    from transformers import DynamicCache

    from chatforge.models.build import ModelConfig, build_model
    from chatforge.sampling.cache_arg import cache_kwargs
    from chatforge.sampling.config import SamplingConfig
    from chatforge.sampling.sampler import Sampler
    from chatforge.tokenizer.load import load_tokenizer

    tokenizer = load_tokenizer(TOKENIZER)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(10, len(tokenizer), (64,), generator=g).tolist() for _ in range(16)]
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=128, stop_token_ids=[], max_batch_size=16)
    results = []
    samplers = {}
    for kv in (8, 2, 1):
        model = build_model(ModelConfig(preset="llama-10m", config_overrides={"num_key_value_heads": kv}), tokenizer, seed=0).eval()
        samplers[kv] = (model, Sampler(model, tokenizer))
        samplers[kv][1].generate(prompts[:2], cfg.model_copy(update={"max_new_tokens": 4}))  # warm-up
    timings: dict[int, list[float]] = {kv: [] for kv in samplers}
    for r in range(repeats):
        order = list(samplers) if r % 2 == 0 else list(reversed(samplers))
        for kv in order:
            start = time.perf_counter()
            samplers[kv][1].generate(prompts, cfg)
            timings[kv].append(len(prompts) * cfg.max_new_tokens / (time.perf_counter() - start))
    for kv, (model, _) in samplers.items():
        cache = DynamicCache()
        with torch.inference_mode():
            ids = torch.tensor(prompts)
            out = model(input_ids=ids, use_cache=True, **cache_kwargs(model, cache))
            token = out.logits[:, -1:].argmax(-1)
            for _ in range(cfg.max_new_tokens):
                out = model(input_ids=token, use_cache=True, **cache_kwargs(model, cache))
                token = out.logits[:, -1:].argmax(-1)
        cache_bytes = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
        results.append({"kv_heads": kv, "tokens_per_s": statistics.median(timings[kv]), "all": timings[kv],
                        "kv_cache_mib": cache_bytes / 2**20, "parameters": sum(p.numel() for p in model.parameters())})
    names = {8: "MHA (8 KV heads)", 2: "GQA (2 KV heads)", 1: "MQA (1 KV head)"}
    write_table(
        OUT / "decode_table.md", ["attention", "parameters", "decode tokens/s (median of 3)", "KV cache after 16 x 192 positions"],
        [[names[r["kv_heads"]], f"{r['parameters'] / 1e6:.2f}M", f"{r['tokens_per_s']:.0f}", f"{r['kv_cache_mib']:.2f} MiB"] for r in results],
        "llama-10m shape, float32, CPU, 1 thread, greedy, 16 prompts x (64 prompt + 128 new tokens)",
    )
    (OUT / "decode.json").write_text(json.dumps(results, indent=2))
    return results


def plot(scores: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, runs in scores.items():
        xs = list(range(0, 4 * L, BUCKET))
        ys = [statistics.fmean(bucket_bpb(n, b, x, x + BUCKET) for n, b in runs) for x in xs]
        ax.plot([x + BUCKET / 2 for x in xs], ys, marker="o", label=name)
    for x in (L, 2 * L):
        ax.axvline(x, color="grey", linestyle=":")
    ax.set(title=f"held-out bits/byte by position (trained at L = {L})", xlabel="position in the window", ylabel="bits/byte")
    ax.legend()
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "science_alibi.png", dpi=110)
    print(f"wrote {IMG / 'science_alibi.png'}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--skip-decode", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    setup()
    scores = length_experiment([int(s) for s in args.seeds.split(",")], args.steps)
    plot(scores)
    if not args.skip_decode:
        decode_experiment()


if __name__ == "__main__":
    main()
