"""Items 1 and 4 of docs/science.md: continued pretraining world A -> world B, and forgetting with
nothing / replay / EWC, against retraining on A u B.

    python examples/science/forgetting.py [--seeds 0,1,2] [--ewc 1e3,1e4,1e5] [--ewc-all-seeds 1e4]

1. `a`: llama-1m pretrained on world A, 150 steps (cosine, warmup 20, peak 3e-3) — the start of every CPT run.
2. per seed, 120 steps on world B (examples/science/cpt.yaml) from `a`:
   rewarm   the same warmup + cosine again (re-warm, re-decay)
   replay   rewarm + 5% of every batch from world A (the seed's advice)
   constant no re-warm: the base run's final LR (3e-4) held constant
   ewc λ    rewarm + EWC (Fisher of 32 world-A rows at the start, weight λ); every --ewc λ on the
            first seed, --ewc-all-seeds on every seed
3. per seed, `union`: from scratch on A and B (equal weights) for 270 steps = the compute of 1 + 2.
Writes runs/science/forgetting/table.md and docs/img/science_forgetting.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import IMG, ROOT, RUNS, curve, domain_bpb, fmt, mean_se, pretrain, setup, world, write_table

OUT = RUNS / "forgetting"
CPT = ROOT / "examples" / "science" / "cpt.yaml"
BASE_STEPS, CPT_STEPS = 150, 120
WORLD_A = f"{{path: {world('pretrain/world_a_train.jsonl')}, name: world_a}}"
WORLD_B = f"{{path: {world('pretrain/world_b_train.jsonl')}, name: world_b}}"


def regimes(seed: int, ewc_first: list[str], ewc_all: list[str], first_seed: bool) -> dict[str, list[str]]:
    rewarm = ["schedule={kind: cosine, warmup_steps: 20, min_lr_ratio: 0.1}"]
    out = {
        "rewarm": rewarm,
        "rewarm + replay 5%": [*rewarm, f"data.replay={{sources: [{{path: {world('pretrain/world_a_train.jsonl')}, name: world_a_replay}}], fraction: 0.05}}"],
        "constant LR (no re-warm)": ["schedule={kind: cosine, warmup_steps: 0, min_lr_ratio: 1.0}", "optim.lr=3e-4"],
    }
    for weight in ewc_first if first_seed else []:
        out[f"rewarm + EWC λ={weight}"] = [*rewarm, ewc(weight)]
    for weight in ewc_all:
        out[f"rewarm + EWC λ={weight}"] = [*rewarm, ewc(weight)]
    return out


def ewc(weight: str) -> str:
    return (f"ewc={{weight: {float(weight)}, samples: 32, sources: [{{path: {world('pretrain/world_a_train.jsonl')}}}], "
            f"cache_dir: {ROOT / 'runs/.cache/tokens'}}}")


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in ".=" else "_" for c in name).strip("_")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ewc", default="1e3,1e4,1e5", help="EWC weights run on the first seed")
    parser.add_argument("--ewc-all-seeds", default="1e4", help="EWC weights run on every seed")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    ewc_all = [w for w in args.ewc_all_seeds.split(",") if w]
    ewc_first = [w for w in args.ewc.split(",") if w and w not in ewc_all]
    setup()
    base = OUT / "a"
    base_summary = pretrain(base, f"data.sources=[{WORLD_A}]", f"train.max_steps={BASE_STEPS}", "train.eval_at_start=false", config=CPT)
    results: dict[str, list[tuple[Path, dict]]] = {}
    # Every seed's main regimes first, the EWC weight sweep (first seed) last: it is what a cut-short run loses.
    plan = [(seed, name, o) for seed in seeds for name, o in [*regimes(seed, [], ewc_all, False).items(), ("union", None)]]
    plan += [(seeds[0], name, o) for name, o in regimes(seeds[0], ewc_first, [], True).items() if "EWC" in name]
    for seed, name, overrides in plan:
        if name == "union":
            out = OUT / f"union_s{seed}"
            summary = pretrain(out, f"data.sources=[{WORLD_A}, {WORLD_B}]", f"train.max_steps={BASE_STEPS + CPT_STEPS}",
                               f"train.seed={seed}", "train.eval_at_start=false", config=CPT)
            results.setdefault("retrain on A ∪ B (from scratch)", []).append((out, summary))
            continue
        out = OUT / f"{slug(name)}_s{seed}"
        summary = pretrain(out, f"init_from={base / 'final'}", f"train.max_steps={CPT_STEPS}", f"train.seed={seed}", *overrides, config=CPT)
        results.setdefault(name, []).append((out, summary))
    a0, b0 = domain_bpb(base_summary, "world_a"), domain_bpb(base_summary, "world_b")
    rows = [["start: world-A model", "1", f"{a0:.4f}", "", f"{b0:.4f}", "", f"{BASE_STEPS}"]]
    for name, runs in results.items():
        a = [domain_bpb(s, "world_a") for _, s in runs]
        b = [domain_bpb(s, "world_b") for _, s in runs]
        steps = BASE_STEPS + CPT_STEPS if name.startswith("retrain") else CPT_STEPS
        rows.append([name, str(len(runs)), fmt(a), fmt([x - a0 for x in a]), fmt(b), fmt([b0 - x for x in b]), str(steps)])
    write_table(
        OUT / "table.md",
        ["regime", "seeds", "world A bits/byte", "forgetting (A, +worse)", "world B bits/byte", "gain on B", "steps paid after A exists"],
        rows, f"llama-1m, 8 x 128 tokens per step; mean ± standard error over seeds; start model {BASE_STEPS} steps on world A",
    )
    plot(results, a0, b0)


def plot(results: dict, a0: float, b0: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_a, ax_b, ax_x) = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, runs in results.items():
        if name.startswith("retrain"):
            continue
        for ax, key in ((ax_a, "val/a_heldout/loss"), (ax_b, "val/b_heldout/loss")):
            curves = [curve(out, key) for out, _ in runs]
            steps = curves[0][0]
            ax.plot(steps, [mean_se([c[1][i] for c in curves])[0] for i in range(len(steps))], label=name)
        a = [domain_bpb(s, "world_a") - a0 for _, s in runs]
        b = [b0 - domain_bpb(s, "world_b") for _, s in runs]
        (am, ase), (bm, bse) = mean_se(a), mean_se(b)
        ax_x.errorbar(am, bm, xerr=ase, yerr=bse, fmt="o", capsize=3, label=name)
    runs = next(v for k, v in results.items() if k.startswith("retrain"))
    a = [domain_bpb(s, "world_a") - a0 for _, s in runs]
    b = [b0 - domain_bpb(s, "world_b") for _, s in runs]
    (am, ase), (bm, bse) = mean_se(a), mean_se(b)
    ax_x.errorbar(am, bm, xerr=ase, yerr=bse, fmt="s", color="black", capsize=3, label=f"retrain on A ∪ B ({BASE_STEPS + CPT_STEPS} steps)")
    ax_a.set(title="world A held-out loss during CPT (forgetting)", xlabel="CPT step", ylabel="nats/token")
    ax_b.set(title="world B held-out loss during CPT (learning)", xlabel="CPT step", ylabel="nats/token")
    ax_x.set(title="retention vs gain (mean ± SE)", xlabel="world A bits/byte change (right = forgot more)",
             ylabel="world B bits/byte gain (up = learned more)")
    ax_x.axvline(0, color="grey", linewidth=0.5)
    for ax in (ax_a, ax_b, ax_x):
        ax.legend(fontsize=7)
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "science_forgetting.png", dpi=110)
    print(f"wrote {IMG / 'science_forgetting.png'}")


if __name__ == "__main__":
    main()
