"""Item 2 of docs/science.md: warmup length, cosine vs "infinite" vs WSD, and where WSD gains.

    python examples/science/schedules.py [--seeds 0,1] [--steps 200]

Runs llama-1m on world A (examples/science/base.yaml) for `--steps` steps at peak LR 3e-3 under:
cosine with warmup 2 / 20 / 60 steps, infinite (warmup 20, cooldown to 0.5x, constant, 10% anneal)
and WSD (warmup 20, 20% 1-sqrt decay), each to the same floor 0.1x, one run per seed. Writes
runs/science/schedules/table.md and docs/img/science_schedules.png.
"""

from __future__ import annotations

import argparse

from common import IMG, RUNS, curve, domain_bpb, fmt, mean_se, pretrain, setup, write_table

OUT = RUNS / "schedules"
SCHEDULES = {
    "cosine, warmup 2": "schedule={kind: cosine, warmup_steps: 2, min_lr_ratio: 0.1}",
    "cosine, warmup 20": "schedule={kind: cosine, warmup_steps: 20, min_lr_ratio: 0.1}",
    "cosine, warmup 60": "schedule={kind: cosine, warmup_steps: 60, min_lr_ratio: 0.1}",
    "infinite": "schedule={kind: infinite, warmup_steps: 20, cooldown_ratio: 0.2, constant_lr_ratio: 0.5, "
    "anneal_ratio: 0.1, anneal_shape: cosine, min_lr_ratio: 0.1}",
    "wsd": "schedule={kind: wsd, warmup_steps: 20, decay_ratio: 0.2, decay_shape: sqrt, min_lr_ratio: 0.1}",
}


def slug(name: str) -> str:
    return name.replace(", ", "_").replace(" ", "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    setup()
    results: dict[str, list[dict]] = {}
    for seed in seeds:
        for name, schedule in SCHEDULES.items():
            out = OUT / f"{slug(name)}_s{seed}"
            summary = pretrain(out, schedule, f"train.max_steps={args.steps}", f"train.seed={seed}", "train.eval_every=10")
            results.setdefault(name, []).append({"out": out, "summary": summary})
    steps = args.steps
    decay_start = steps - round(0.2 * steps)
    rows = []
    for name, runs in results.items():
        final = [domain_bpb(r["summary"], "world_a") for r in runs]
        # The share of the run's validation-loss drop (from step 20 to the end) made in the last 20% of steps.
        shares, at_decay = [], []
        for r in runs:
            s, loss = curve(r["out"], "val/a_heldout/loss")
            by_step = dict(zip(s, loss))
            first, before, last = by_step[20], by_step[decay_start], by_step[steps]
            shares.append((before - last) / (first - last))
            at_decay.append(before)
        rows.append([name, fmt(final), fmt(at_decay), fmt([100 * x for x in shares], 1) + " %"])
    table = write_table(
        OUT / "table.md",
        ["schedule", "world A held-out bits/byte (end)", f"val loss at step {decay_start}", f"share of the loss drop in steps {decay_start}-{steps}"],
        rows,
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))}), mean ± standard error; llama-1m, {steps} steps x 8 x 128 tokens, peak LR 3e-3",
    )
    plot(results, decay_start)
    print(table)


def plot(results: dict[str, list[dict]], decay_start: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lr, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for name, runs in results.items():
        s, lr = curve(runs[0]["out"], "lr")
        ax_lr.plot(s, lr, label=name)
        curves = [curve(r["out"], "val/a_heldout/loss") for r in runs]
        steps = curves[0][0]
        means = [mean_se([c[1][i] for c in curves])[0] for i in range(len(steps))]
        ax_loss.plot(steps, means, label=name)
    ax_loss.axvline(decay_start, color="grey", linestyle=":", label="last 20% (WSD decay)")
    ax_lr.set(title="learning rate", xlabel="step", ylabel="LR")
    ax_loss.set(title="world A held-out loss (mean over seeds)", xlabel="step", ylabel="nats/token", ylim=(None, None))
    lows = [min(mean_se([c[1][i] for c in [curve(r["out"], "val/a_heldout/loss") for r in runs]])[0]
                for i in range(3, len(curve(runs[0]["out"], "val/a_heldout/loss")[0]))) for runs in results.values()]
    ax_loss.set_ylim(min(lows) - 0.05, min(lows) + 1.6)
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "science_schedules.png", dpi=110)
    print(f"wrote {IMG / 'science_schedules.png'}")


if __name__ == "__main__":
    main()
