"""Item 5 of docs/science.md (and the MiniCPM half of item 2): when to spend high-quality data, and
batch size against tokens-to-target.

    python examples/science/staging.py staging [--seeds 0] [--steps 200]
    python examples/science/staging.py batch [--seeds 0] [--tokens 204800] [--target 2.4]

staging: llama-1m on world A prose with world A's short-answer QA text as the "high-quality" source,
WSD schedule (warmup 20, 20% decay). The QA budget is the same 10% of rows in every arm: none (0%),
throughout (10% of every step), start (50% of the first 20% of steps), anneal (50% of the decay
phase, the last 20%). Scored on 10% held-out documents of each source (bits/byte).

batch: rows per step 4 / 8 / 16 / 32 at the same peak LR and the same token budget; tokens-to-target
is the first evaluation (every 1/20 of the run) whose world-A held-out loss is at or below --target.
Writes runs/science/staging/*.md and docs/img/science_staging.png.
"""

from __future__ import annotations

import argparse

from common import IMG, RUNS, curve, fmt, pretrain, setup, world, write_table

OUT = RUNS / "staging"
PROSE = f"{{path: {world('pretrain/world_a_train.jsonl')}, name: prose}}"
QA = f"{{path: {world('pretrain/world_a_qa.jsonl')}, name: qa}}"
WSD = "schedule={kind: wsd, warmup_steps: 20, decay_ratio: 0.2, decay_shape: sqrt, min_lr_ratio: 0.1}"
ARMS = {
    "none": "data.stages=[{name: all, start_step: 0, weights: {prose: 1.0}}]",
    "throughout": "data.stages=[{name: all, start_step: 0, weights: {prose: 0.9, qa: 0.1}}]",
    "start": "data.stages=[{name: start, start_step: 0, weights: {prose: 0.5, qa: 0.5}}, "
    "{name: rest, start_fraction: 0.2, weights: {prose: 1.0}}]",
    "anneal": "data.stages=[{name: stable, start_step: 0, weights: {prose: 1.0}}, "
    "{name: anneal, start_phase: decay, weights: {prose: 0.5, qa: 0.5}}]",
}


def staging(seeds: list[int], steps: int) -> None:
    rows = []
    for arm, stages in ARMS.items():
        results = [
            pretrain(OUT / f"{arm}_s{seed}", f"data.sources=[{PROSE}, {QA}]", stages, WSD, "data.val_fraction=0.1",
                     "data.eval_sources=[]", "domains=[]", f"train.max_steps={steps}", f"train.seed={seed}", "train.eval_every=0")
            for seed in seeds
        ]
        qa = [r["heldout_bpb_by_source"]["qa"] for r in results]
        prose = [r["heldout_bpb_by_source"]["prose"] for r in results]
        shares = results[0]["mixture"]["observed_rows"]  # stage -> source -> share of that stage's rows
        observed = ", ".join(f"{stage}: {share.get('qa', 0):.2f}" for stage, share in shares.items())
        rows.append([arm, fmt(qa), fmt(prose), observed])
    write_table(OUT / "staging_table.md", ["QA data", "QA held-out bits/byte", "prose held-out bits/byte", "observed QA share of rows per stage (seed 0)"],
                rows, f"{len(seeds)} seed(s); llama-1m, WSD, {steps} steps x 8 x 128 tokens")


def batch(seeds: list[int], tokens: int, target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for size in (4, 8, 16, 32):
        steps = tokens // (size * 128)
        reached = []
        for seed in seeds:
            out = OUT / f"batch{size}_s{seed}"
            pretrain(out, f"train.micro_batch_size={size}", f"train.max_steps={steps}", f"train.seed={seed}",
                     f"train.eval_every={max(steps // 20, 1)}", "schedule={kind: cosine, warmup_steps: 10, min_lr_ratio: 0.1}")
            s, loss = curve(out, "val/a_heldout/loss")
            hit = next((st for st, v in zip(s, loss) if v <= target), None)
            reached.append(hit * size * 128 if hit is not None else float("nan"))
            if seed == seeds[0]:
                ax.plot([st * size * 128 for st in s], loss, label=f"{size} rows/step")
        rows.append([str(size), str(steps), fmt(reached, 0)])
    ax.axhline(target, color="grey", linestyle=":")
    ax.set(xlabel="tokens", ylabel="world A held-out loss", title="batch size at a fixed token budget")
    ax.legend()
    fig.tight_layout()
    fig.savefig(IMG / "science_batch.png", dpi=110)
    write_table(OUT / "batch_table.md", ["rows per step", "steps", f"tokens to held-out loss <= {target}"], rows,
                f"{len(seeds)} seed(s); llama-1m, peak LR 3e-3, {tokens:,} tokens")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["staging", "batch"])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=204800)
    parser.add_argument("--target", type=float, default=2.4)
    args = parser.parse_args()
    setup()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.what == "staging":
        staging(seeds, args.steps)
    else:
        batch(seeds, args.tokens, args.target)


if __name__ == "__main__":
    main()
