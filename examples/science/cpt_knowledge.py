"""Item 1 of docs/science.md on the learnable world: continued pretraining world A -> world B, measured
as knowledge of facts (both worlds' knowledge tests) as well as bits/byte, seeds pooled.

    python examples/science/cpt_knowledge.py --device cuda --jobs 16              # full size: 16 processes
    python examples/science/cpt_knowledge.py --out runs/science/cpt_knowledge_tiny \\
        --base-steps 40 --cpt-steps 30 --seeds 0,1 --max-questions 20         # a check on CPU (warmup is 20)

1. `start`: llama-2m pretrained on world A exactly as examples/world/pretrain.yaml does it (world A
   text 0.65 + its QA text 0.25 + solved arithmetic 0.10; 16 x 256 tokens, peak 3e-3, cosine,
   warmup 20, floor 0.1 x peak), --base-steps (800). One run, seed 0: the start of every CPT run.
2. per seed, --cpt-steps on world B (world B text 0.65 + its QA text 0.25, the start run's weights
   without the arithmetic), from `start`, in the regimes of docs/science.md §1:
   rewarm     the same warmup + cosine again (re-warm, re-decay)
   replay     rewarm + --replay (5%) of every batch from the start run's own mixture (world A)
   constant   no re-warm: the start run's final LR (3e-4) held for the whole run
   ewc        rewarm + EWC (Fisher of 32 rows of world A text + QA at the start, weight --ewc)
   lora       rewarm through LoRA adapters (r 8) on the frozen start model (`mode=lora`), merged at the end
3. per seed, `union`: from scratch on A u B (both mixtures, equal total weight) for base + cpt steps,
   the compute of 1 + 2: CPT pays --cpt-steps once `start` exists, retraining pays all of them again.
Every run ends scored on both worlds: the knowledge test (option likelihood, 1 shot, every question
of ceval/test) and bits/byte of the held-out documents (the `domains` of `chatforge pretrain`).

Runs are separate `chatforge pretrain` processes, --jobs at a time (the union runs start beside the
start run; the CPT runs when it is done); a finished run (its report/summary.json) is skipped, so
the driver can be rerun after a kill. The world and its tokenizer are built once under --world
(as examples/world/sweep.py's prepare() does). Writes OUT/table.md, OUT/results.json and
--img/science_cpt_knowledge.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from common import IMG, ROOT, RUNS, curve, env, fmt, mean_se, pretrain, write_table

sys.path.insert(0, str(ROOT / "examples" / "world"))
from sweep import prepare  # noqa: E402  (the learnable world's own data + tokenizer recipe)

CONFIG = ROOT / "examples" / "world" / "pretrain.yaml"
START_FINAL_LR = 3.0e-4  # pretrain.yaml: peak 3e-3, cosine floor 0.1 x peak
REGIMES = ("rewarm", "rewarm + replay", "constant LR (no re-warm)", "rewarm + EWC", "rewarm + LoRA",
           "retrain on A ∪ B (from scratch)")


@dataclass
class Job:
    regime: str
    seed: int
    out: Path
    overrides: list[str]
    summary: dict | None = None
    seconds: float = 0.0
    error: str = ""
    extra: dict = field(default_factory=dict)


def world_a(data: Path, suffix: str = "") -> list[str]:
    pre = data / "pretrain"
    return [f"{{path: {pre}/world_a_train.jsonl, name: world_a{suffix}, weight: 0.65}}",
            f"{{path: {pre}/world_a_qa.jsonl, name: world_a_qa{suffix}, weight: 0.25}}",
            f"{{path: {pre}/arithmetic_train.jsonl, name: arithmetic{suffix}, weight: 0.10}}"]


def world_b(data: Path, total: float = 0.9) -> list[str]:
    """World B text and QA at world A's 0.65 : 0.25, summing to `total` (1.0 beside world A in the union)."""
    pre = data / "pretrain"
    return [f"{{path: {pre}/world_b_train.jsonl, name: world_b, weight: {0.65 * total / 0.9:.4f}}}",
            f"{{path: {pre}/world_b_qa.jsonl, name: world_b_qa, weight: {0.25 * total / 0.9:.4f}}}"]


def scoring(data: Path, max_questions: int | None, eval_every: int) -> list[str]:
    """Both worlds' held-out documents and knowledge tests at the end; held-out loss curves every eval_every."""
    pre, questions = data / "pretrain", "null" if max_questions is None else str(max_questions)

    def domain(w: str) -> str:
        return (f"{{name: world_{w}, texts: {{path: {pre}/world_{w}_valid.jsonl}}, max_documents: 100, "
                f"knowledge: {{path: {data / 'ceval'}, subject: world_{w}, shots: 1, method: option, "
                f"max_questions: {questions}}}}}")

    return [f"domains=[{domain('a')}, {domain('b')}]", "domains_before=false",
            f"data.eval_sources=[{{path: {pre}/world_a_valid.jsonl, name: a_heldout}}, "
            f"{{path: {pre}/world_b_valid.jsonl, name: b_heldout}}]",
            "data.eval_batches=4", f"train.eval_every={eval_every}", f"train.eval_at_start={str(eval_every > 0).lower()}"]


def cpt_overrides(regime: str, data: Path, replay: float, ewc: float) -> list[str]:
    """What one CPT regime sets on top of the world-B data (pure: the table's rows are named by these)."""
    rewarm = ["schedule={kind: cosine, warmup_steps: 20, min_lr_ratio: 0.1}"]
    if regime == "rewarm":
        return rewarm
    if regime == "rewarm + replay":
        return [*rewarm, f"data.replay={{sources: [{', '.join(world_a(data, '_replay'))}], fraction: {replay}}}"]
    if regime == "constant LR (no re-warm)":
        return ["schedule={kind: cosine, warmup_steps: 0, min_lr_ratio: 1.0}", f"optim.lr={START_FINAL_LR}"]
    if regime == "rewarm + EWC":
        pre = data / "pretrain"
        return [*rewarm, f"ewc={{weight: {ewc}, samples: 32, sources: [{{path: {pre}/world_a_train.jsonl}}, "
                         f"{{path: {pre}/world_a_qa.jsonl}}], cache_dir: {ROOT / 'runs/.cache/tokens'}}}"]
    if regime == "rewarm + LoRA":  # adapters (r 8) on the frozen world-A model, merged at the end
        return [*rewarm, "mode=lora", "lora.r=8"]
    raise ValueError(f"unknown regime {regime!r}")


def slug(regime: str) -> str:
    return {"rewarm": "rewarm", "rewarm + replay": "replay", "constant LR (no re-warm)": "constant",
            "rewarm + EWC": "ewc", "rewarm + LoRA": "lora", "retrain on A ∪ B (from scratch)": "union"}[regime]


def plan(args, data: Path) -> tuple[Job, list[Job], list[Job]]:
    common = [f"train.device={args.device}", f"train.precision={args.precision}", "train.save_every=0",
              "train.resume=never", "train.progress=false"]
    cpt_eval = scoring(data, args.max_questions, max(1, args.cpt_steps // 10))
    start = Job("start", 0, args.out / f"start_{args.base_steps}",
                [f"data.sources=[{', '.join(world_a(data))}]", f"train.max_steps={args.base_steps}", "train.seed=0",
                 *common, *scoring(data, args.max_questions, 0)])
    unions = [Job(REGIMES[-1], seed, args.out / f"union_{args.base_steps + args.cpt_steps}_s{seed}",
                  [f"data.sources=[{', '.join(world_a(data) + world_b(data, total=1.0))}]",
                   f"train.max_steps={args.base_steps + args.cpt_steps}", f"train.seed={seed}", *common,
                   *scoring(data, args.max_questions, 0)])
              for seed in args.seeds if "union" in args.regimes]
    cpts = [Job(regime, seed, args.out / f"{slug(regime)}_{args.base_steps}+{args.cpt_steps}_s{seed}",
                [f"init_from={start.out / 'final'}", f"data.sources=[{', '.join(world_b(data))}]",
                 f"train.max_steps={args.cpt_steps}", f"train.seed={seed}", *common, *cpt_eval,
                 *cpt_overrides(regime, data, args.replay, args.ewc)])
            for seed in args.seeds for regime in REGIMES[:-1] if slug(regime) in args.regimes]
    return start, unions, cpts


def run(job: Job, tokenizer: Path) -> Job:
    began = time.time()
    try:
        job.summary = pretrain(job.out, *job.overrides, config=CONFIG, tokenizer=tokenizer)
    except SystemExit as err:  # common.pretrain's one-line failure; the other runs go on
        job.error = str(err)
    job.seconds = round(time.time() - began, 1)
    print(f"{job.out.name}: {'failed: ' + job.error if job.error else 'done'} in {job.seconds:.0f} s", flush=True)
    return job


# --- pooling and the table (pure; tests/test_science_cpt_knowledge.py checks them by hand) ---

def scores(summary: dict) -> dict[str, float]:
    """One run's four numbers: each world's knowledge accuracy and held-out bits/byte."""
    d = summary["domains"]
    return {"a_knowledge": d["world_a"]["after"]["knowledge_acc"], "b_knowledge": d["world_b"]["after"]["knowledge_acc"],
            "a_bpb": d["world_a"]["after"]["bpb"], "b_bpb": d["world_b"]["after"]["bpb"]}


def pooled(runs: list[dict]) -> dict[str, tuple[float, float, int]]:
    """Per metric: mean, standard error over seeds, and the number of seeds."""
    per_run = [scores(s) for s in runs]
    return {k: (*mean_se([r[k] for r in per_run]), len(per_run)) for k in per_run[0]}


def table_rows(start: dict, by_regime: dict[str, list[dict]], base_steps: int, cpt_steps: int) -> list[list[str]]:
    s = scores(start)
    rows = [["start: world-A model", "1", f"{s['a_knowledge']:.3f}", "", f"{s['b_knowledge']:.3f}",
             f"{s['a_bpb']:.4f}", f"{s['b_bpb']:.4f}", str(base_steps)]]
    for regime, runs in by_regime.items():
        if not runs:
            continue
        per_run = [scores(r) for r in runs]
        a = [r["a_knowledge"] for r in per_run]
        steps = base_steps + cpt_steps if regime.startswith("retrain") else cpt_steps
        rows.append([regime, str(len(runs)), fmt(a, 3), fmt([s["a_knowledge"] - x for x in a], 3),
                     fmt([r["b_knowledge"] for r in per_run], 3), fmt([r["a_bpb"] for r in per_run]),
                     fmt([r["b_bpb"] for r in per_run]), str(steps)])
    return rows


HEADER = ["regime", "seeds", "world-A knowledge", "A knowledge lost", "world-B knowledge", "world-A bits/byte",
          "world-B bits/byte", "steps paid after A exists"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RUNS / "cpt_knowledge", help="run directories and table.md")
    parser.add_argument("--world", type=Path, default=RUNS / "cpt_knowledge",
                        help="holds data/ (the world) and tokenizer/; built here when missing")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (separate processes)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--base-steps", type=int, default=800, help="world-A pretraining of the start model")
    parser.add_argument("--cpt-steps", type=int, default=400, help="continued pretraining on world B")
    parser.add_argument("--replay", type=float, default=0.05, help="share of every CPT batch from world A")
    parser.add_argument("--ewc", type=float, default=1.0e4, help="EWC weight λ")
    parser.add_argument("--max-questions", type=int, default=None, help="score the first N questions (default: all)")
    parser.add_argument("--img", type=Path, default=IMG)
    parser.add_argument("--regimes", default=",".join(slug(r) for r in REGIMES),
                        help="comma-separated subset of " + ", ".join(slug(r) for r in REGIMES))
    args = parser.parse_args()
    args.regimes = args.regimes.split(",")
    unknown = sorted(set(args.regimes) - {slug(r) for r in REGIMES})
    if unknown:
        parser.error(f"unknown regime(s) {unknown}")
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.out, args.world = args.out.resolve(), args.world.resolve()
    began = time.time()
    prepare(args.world, env(), "default")
    data, tokenizer = args.world / "data", args.world / "tokenizer"
    start, unions, cpts = plan(args, data)
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        start_future = pool.submit(run, start, tokenizer)
        union_futures = [pool.submit(run, job, tokenizer) for job in unions]
        if start_future.result().summary is None:
            pool.shutdown(cancel_futures=True)
            raise SystemExit(f"the start model failed: {start.error}")
        cpt_futures = [pool.submit(run, job, tokenizer) for job in cpts]
        done: list[Job] = []
        for future in as_completed(cpt_futures + union_futures):
            done.append(future.result())
            report(args, start, done, final=False)  # a driver cut short still leaves what it measured
    by_regime, failed = report(args, start, done, final=True)
    plot(start.summary, by_regime, cpts, args)
    print(f"cpt_knowledge: {time.time() - began:.0f} s wall; {len(failed)} failed run(s) {failed}; "
          f"{args.out / 'table.md'}", flush=True)
    if failed:
        raise SystemExit(1)


def report(args, start: Job, done: list[Job], final: bool) -> tuple[dict[str, list[dict]], list[str]]:
    """OUT/table.md and OUT/results.json from the runs finished so far (the table printed when final)."""
    by_regime = {r: [j.summary for j in sorted(done, key=lambda j: j.seed) if j.regime == r and j.summary]
                 for r in REGIMES}
    failed = [j.out.name for j in done if j.summary is None]
    title = (f"llama-2m, 16 x 256 tokens per step; start model {args.base_steps} steps on world A (one run); "
             f"CPT {args.cpt_steps} steps on world B; mean ± standard error over seeds {args.seeds}; knowledge: "
             f"option likelihood, 1 shot, {'all' if args.max_questions is None else args.max_questions} questions "
             "per world (chance 0.25); bits/byte: each world's held-out documents")
    write_table(args.out / "table.md", HEADER, table_rows(start.summary, by_regime, args.base_steps, args.cpt_steps),
                title, echo=final)
    results = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "complete": final, "start": scores(start.summary), "failed": failed,
               "runs": [{"regime": j.regime, "seed": j.seed, "dir": j.out.name, "seconds": j.seconds,
                         **(scores(j.summary) if j.summary else {"error": j.error})} for j in [start, *done]],
               "pooled": {r: pooled(runs) for r, runs in by_regime.items() if runs}}
    (args.out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    return by_regime, failed


def plot(start: dict, by_regime: dict[str, list[dict]], cpts: list[Job], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = scores(start)
    # Runs copied back from another machine with only their summaries have no curve to draw.
    outs_by_regime = {r: [j.out for j in cpts if j.regime == r and j.summary and (j.out / "metrics.jsonl").exists()]
                      for r in REGIMES[:-1]}
    with_curves = any(outs_by_regime.values())
    fig, axes = plt.subplots(1, 3 if with_curves else 2, figsize=(16 if with_curves else 11, 4.6))
    ax_k, ax_b = axes[0], axes[1]
    for ax, (x, y) in ((ax_k, ("a_knowledge", "b_knowledge")), (ax_b, ("a_bpb", "b_bpb"))):
        ax.plot(s[x], s[y], "*", color="grey", markersize=12, label="start (world-A model)")
        for regime, runs in by_regime.items():
            if not runs:
                continue
            p = pooled(runs)
            marker = "s" if regime.startswith("retrain") else "o"
            ax.errorbar(p[x][0], p[y][0], xerr=p[x][1], yerr=p[y][1], fmt=marker, capsize=3, label=regime)
    ax_k.axhline(0.25, color="grey", linewidth=0.5, linestyle=":")
    ax_k.axvline(0.25, color="grey", linewidth=0.5, linestyle=":")
    ax_k.set(title="knowledge: retention (x) vs gain (y), mean ± SE", xlabel="world-A knowledge accuracy (right = kept)",
             ylabel="world-B knowledge accuracy (up = learned)")
    ax_b.set(title="bits/byte on held-out documents, mean ± SE", xlabel="world A bits/byte (right = forgot)",
             ylabel="world B bits/byte (down = learned)")
    if with_curves:
        ax_c = axes[2]
        for regime, outs in outs_by_regime.items():
            if not outs:
                continue
            curves = [curve(out, "val/a_heldout/loss") for out in outs]
            steps = curves[0][0]
            ax_c.plot(steps, [mean_se([c[1][i] for c in curves if i < len(c[1])])[0] for i in range(len(steps))],
                      label=regime)
        ax_c.set(title="world-A held-out loss during CPT (mean over seeds)", xlabel="CPT step", ylabel="nats/token")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    args.img.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.img / "science_cpt_knowledge.png", dpi=110)
    print(f"wrote {args.img / 'science_cpt_knowledge.png'}")


if __name__ == "__main__":
    main()
