"""OpenMP's wait policy on a small CPU: torch's default threads against OMP_WAIT_POLICY=PASSIVE and one
thread, on a quiet machine and with one core kept busy by another process, side by side in one run.

    .venv/bin/python bench/omp_wait_policy.py                    # llama-2m, 3 repeats, both conditions
    .venv/bin/python bench/omp_wait_policy.py --preset llama-10m --repeats 5 --json runs/bench/omp.json

Why. torch's CPU kernels run on libgomp's thread pool. With the default policy a thread that reaches a
barrier first spins, waiting for its partners; when another process holds one of the two cores, the
partner is descheduled and the spinning thread burns its time slice, every kernel. A tiny model runs
thousands of small kernels per second (a decode step of a 2M model is ~100 of them), so it pays that
wait thousands of times: the sampler measured 211 tokens/s with two threads beside one busy process
where one thread makes 4,582 (docs/recipes.md). PASSIVE makes a waiting thread sleep instead.

What is compared. Each cell is a fresh child process (the policy is read when torch loads libgomp, so
it cannot change inside one process) that imports torch before chatforge and runs one workload:
  decode  chatforge's Sampler on the preset (random init, a byte-level BPE trained once here): 16
          pydoc prompts x 8 samples = 128 rows, exactly --new-tokens tokens each (no stop token), T=1;
  train   forward + backward + AdamW on random token ids, 16 rows x 256 tokens, 2 warm-up steps, then
          --train-steps timed steps.
Variants: `default` (OMP_WAIT_POLICY unset, torch's default thread count = the cores), `passive`
(OMP_WAIT_POLICY=PASSIVE, same threads), `1 thread` (OMP_NUM_THREADS=1). Conditions: `quiet` (nothing
else of ours running; the load average is printed, since a shared machine is never fully quiet) and
`busy` (a second process spins on one core for the whole child run, as a test suite, a browser or a
second job would). Repeats rotate the order of the variants. The table gives the median tokens/s of
each cell and the ratios to `default` in the same condition. Exit 0 whatever the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = {"default": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "1 thread": {"OMP_NUM_THREADS": "1"}}
WORKLOADS = ("decode", "train")
CONDITIONS = ("quiet", "busy")


def child(spec: dict) -> dict:
    import torch  # first: libgomp reads OMP_WAIT_POLICY when torch loads it

    sys.path.insert(0, str(HERE))
    from sampler_vs_generate import make_prompts

    from chatforge.models.build import ModelConfig, build_model
    from chatforge.sampling import Sampler, SamplingConfig
    from chatforge.tokenizer.load import load_tokenizer

    tokenizer = load_tokenizer(spec["tokenizer"])
    model = build_model(ModelConfig(preset=spec["preset"]), tokenizer, seed=0)
    if spec["workload"] == "decode":
        model.eval()
        prompts = make_prompts(tokenizer, 16)
        cfg = SamplingConfig(max_new_tokens=spec["new_tokens"], stop_token_ids=[], seed=0, temperature=1.0, n=8,
                             max_batch_size=128)
        sampler = Sampler(model, tokenizer)
        sampler.generate(prompts[:2], cfg.model_copy(update={"max_new_tokens": 4}))  # warm-up
        start = time.perf_counter()
        out = sampler.generate(prompts, cfg)
        seconds = time.perf_counter() - start
        tokens = sum(len(c.token_ids) for row in out for c in row)
    else:
        model.train()
        optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, len(tokenizer), (16, 256), generator=gen)

        def step() -> None:
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optim.step()
            optim.zero_grad(set_to_none=True)

        for _ in range(2):
            step()
        start = time.perf_counter()
        for _ in range(spec["train_steps"]):
            step()
        seconds = time.perf_counter() - start
        tokens = 16 * 256 * spec["train_steps"]
    return {"tokens_per_s": tokens / seconds, "threads": torch.get_num_threads()}


def run_cell(args, tokenizer: str, workload: str, variant: str, condition: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(VARIANTS[variant])
    spec = {"tokenizer": tokenizer, "preset": args.preset, "workload": workload, "new_tokens": args.new_tokens,
            "train_steps": args.train_steps}
    burner = None
    if condition == "busy":
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, capture_output=True,
                              text=True, check=False)
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    if done.returncode != 0:
        raise SystemExit(f"{workload}/{variant}/{condition} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="llama-2m")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens generated per row (decode)")
    p.add_argument("--train-steps", type=int, default=6, help="timed training steps (train)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--conditions", default=",".join(CONDITIONS))
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    from chatforge.run_dir import RejectLog
    from chatforge.tokenizer.train import TokenizerConfig, save_tokenizer, train_tokenizer

    tokenizer = tempfile.mkdtemp(prefix="bench_omp_tok_")
    save_tokenizer(train_tokenizer(TokenizerConfig(vocab_size=2048, out=tokenizer), RejectLog(None)), tokenizer)
    conditions = args.conditions.split(",")
    workloads = args.workloads.split(",")
    print(f"{args.preset}, {os.cpu_count()} CPUs, decode: 128 rows x {args.new_tokens} new tokens, train: 16 x 256 "
          f"tokens x {args.train_steps} steps; load average {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[str, list[float]] = {}
    names = list(VARIANTS)
    for r in range(args.repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for condition in conditions:
            for workload in workloads:
                for variant in order:
                    out = run_cell(args, tokenizer, workload, variant, condition)
                    results.setdefault(f"{condition}|{workload}|{variant}", []).append(out["tokens_per_s"])
                    print(f"  repeat {r + 1}/{args.repeats} {condition:5s} {workload:6s} {variant:8s} "
                          f"{out['tokens_per_s']:9,.0f} tokens/s ({out['threads']} threads, load "
                          f"{os.getloadavg()[0]:.2f})", flush=True)
    print(f"\n| condition | workload | {' | '.join(names)} | passive / default | 1 thread / default |")
    print("|---|---|" + "---|" * (len(names) + 2))
    table = {}
    for condition in conditions:
        for workload in workloads:
            med = {v: statistics.median(results[f"{condition}|{workload}|{v}"]) for v in names}
            table[f"{condition}|{workload}"] = med
            cells = " | ".join(f"{med[v]:,.0f}" for v in names)
            print(f"| {condition} | {workload} | {cells} | {med['passive'] / med['default']:.2f} | "
                  f"{med['1 thread'] / med['default']:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": results,
                                         "medians": table}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
