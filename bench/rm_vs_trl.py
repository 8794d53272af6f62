"""chatforge reward model vs TRL's `RewardTrainer`: the same tiny model, pairs and batch size, side by side.

    bash bench/trl_env.sh                              # once: TRL in its own venv, bench/.venv-trl
    .venv/bin/python bench/rm_vs_trl.py                # llama-10m, 8 pairs per step, 10 timed steps, 2 repeats
    .venv/bin/python bench/rm_vs_trl.py --json runs/rm_vs_trl.json
    .venv/bin/python bench/rm_vs_trl.py --sides chatforge,chatforge-pack,chatforge-pad,trl   # chatforge's layouts too
    OMP_NUM_THREADS=1 .venv/bin/python bench/rm_vs_trl.py --profile --steps 3 --repeats 1   # cProfile of each side

What is compared. The script builds a tiny chat model and tokenizer as bench/sft_vs_trl.py does, loads it
once as a sequence classifier with a fresh one-output `score` head (`chatforge.rm.model.load_reward_model`,
fixed seed) and saves that, so both sides start from the same weights, head included. Each run is a
fresh subprocess:
  chatforge       `chatforge.stages.rm.run` (the `chatforge rm` stage) with `loss=bt` (Bradley-Terry,
                  -log sigmoid(r_chosen - r_rejected), mean over the pairs), no margin, no centring, and
                  its default layout `data.packing=shared_prefix`: the micro-batch's pairs packed into
                  rows, each pair's rendered prompt computed once for both answers;
  chatforge-pack  the same with `data.packing=pack`: packed rows, every conversation whole;
  chatforge-pad   the same with `data.packing=pad`: one right-padded row per conversation (TRL's layout);
  trl             `trl.RewardTrainer` (`RewardConfig`, `center_rewards_coefficient=None`, no margin
                  column): the same loss, chosen and rejected of every pair in one forward of 2x
                  `--batch-size` right-padded rows.
All: fp32 (`bf16=False`), no gradient checkpointing, fused AdamW (betas 0.9/0.999, eps 1e-8, no weight
decay), constant LR, clipping at 1.0, no accumulation, `--batch-size` pairs per step in one forward, the
reward read at each conversation's last non-pad token, no evaluation, no checkpoint in the timed steps,
metrics logged every step.
Same data and order: the task world's preference pairs as chatforge reads and renders them (prompt
messages + the answer as an assistant turn, through the chat template); chatforge's epoch is a seeded
permutation, which the script reads and hands to TRL in order with `train_sampling_strategy="sequential"`
(conversational records: prompt messages, `chosen`/`rejected` as one assistant message; TRL renders
prompt + answer with the same template). The script checks that every timed step saw the same
conversations on every side (their token count and the sum of their token ids, each conversation
counted whole), and that the first losses agree. It also reports the token positions each side's
forwards computed (padding and repeated prompts included).

Timing, memory, repeats, medians and exit codes as in bench/dpo_vs_trl.py: pairs/s = pairs of the
`--steps` steps after `--warmup` / their span (one `perf_counter` stamp per step: chatforge in
`GroupBatches.next_batch`, TRL in `on_step_begin`); peak memory = the child's `ru_maxrss`.
"""

from __future__ import annotations

# Only the standard library at module level: the TRL child runs this file in a venv without chatforge.
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _trl_common as common  # noqa: E402

SCRIPT = Path(__file__).resolve()
LR = 5e-5
FIRST_LOSS_TOLERANCE = 1e-3
SIDES = ("chatforge", "chatforge-pack", "chatforge-pad", "trl")
PACKING = {"chatforge": "shared_prefix", "chatforge-pack": "pack", "chatforge-pad": "pad"}
TARGET = 1.3


def rm_config(spec: dict, out: str, packing: str = "shared_prefix"):
    from pydantic import TypeAdapter

    from chatforge.engine.config import OptimConfig, TrainConfig
    from chatforge.engine.schedules import ScheduleConfig
    from chatforge.stages import rm

    return rm.Config(
        out=out, model=spec["model_dir"], loss="bt", margin_scale=None, center_coefficient=0.0, eval_before=False,
        data=rm.RMDataConfig(sources=[{"path": spec["pairs_file"]}], max_length=spec["max_length"], truncation="drop",
                             packing=packing),
        train=TrainConfig(
            max_steps=spec["warmup"] + spec["steps"] + 1, micro_batch_size=spec["batch_size"], seed=spec["seed"],
            precision="fp32", device="cpu", log_every=1, eval_every=0, save_every=0, resume="never", progress=False,
        ),
        optim=OptimConfig(lr=LR, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8, max_grad_norm=1.0, implementation="fused"),
        schedule=TypeAdapter(ScheduleConfig).validate_python({"kind": "constant", "warmup_steps": 0}),
    )


# ---- chatforge, in its own process ----------------------------------------------------------------
def child_chatforge(spec: dict, side: str) -> dict:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    from chatforge.engine.log import read_metrics
    from chatforge.rm import data
    from chatforge.stages import rm

    clock = common.StepClock()
    clock.extra["positions"] = []
    original_next, original_collate = data.GroupBatches.next_batch, data.collate

    def next_batch(self):
        clock.stamp()
        return original_next(self)

    def collate(groups, pad_id, packing="pad"):
        batch = original_collate(groups, pad_id, packing)
        rows = [ids for g in groups for ids in g.input_ids]
        clock.counts.append([sum(len(r) for r in rows), sum(sum(r) for r in rows)])
        clock.extra["positions"].append(int(batch["input_ids"].numel()))
        return batch

    data.GroupBatches.next_batch, data.collate = next_batch, collate
    out = Path(spec["workdir"]) / f"{side}-rm-{time.time_ns()}"
    cfg = rm_config(spec, str(out), PACKING[side])
    torch.manual_seed(spec["seed"])
    clock.rss_start = common.rss_now_mib()
    if spec.get("profile"):
        common.profiled(lambda: rm.run(cfg), Path(spec["workdir"]) / f"profile-{side}.txt")
    else:
        rm.run(cfg)
    for row in read_metrics(out / "metrics.jsonl"):
        if "loss" in row:
            clock.logs.append({k: row[k] for k in ("loss", "accuracy") if k in row})
    return clock.result(spec)


# ---- TRL, in its own process and venv -------------------------------------------------------------
def child_trl(spec: dict) -> dict:
    import datasets
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    clock = common.StepClock()
    clock.extra["positions"] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            clock.stamp()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                clock.logs.append({k: float(logs[k]) for k in ("loss", "accuracy") if k in logs})

    class BenchRewardTrainer(RewardTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            if model.training:
                mask = inputs["attention_mask"]
                clock.counts.append([int(mask.sum()), int((inputs["input_ids"] * mask).sum())])
                clock.extra["positions"].append(int(inputs["input_ids"].numel()))
            return super().compute_loss(model, inputs, *args, **kwargs)

    out = Path(spec["workdir"]) / f"trl-rm-{time.time_ns()}"
    args = RewardConfig(
        output_dir=str(out), max_steps=spec["warmup"] + spec["steps"] + 1, per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch_fused", adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, weight_decay=0.0,
        max_grad_norm=1.0, bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, seed=spec["seed"],
        max_length=spec["max_length"], center_rewards_coefficient=None, train_sampling_strategy="sequential",
        eval_strategy="no", save_strategy="no", logging_steps=1, report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, dataset_num_proc=None,
    )
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForSequenceClassification.from_pretrained(spec["model_dir"], num_labels=1, dtype=torch.float32)
    dataset = datasets.load_dataset("json", data_files=spec["trl_file"], split="train")
    torch.manual_seed(spec["seed"])
    clock.rss_start = common.rss_now_mib()
    trainer = BenchRewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                 callbacks=[Clock()])
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
    if spec.get("profile"):
        common.profiled(trainer.train, Path(spec["workdir"]) / "profile-trl.txt")
    else:
        trainer.train()
    return clock.result(spec)


# ---- the parent ------------------------------------------------------------------------------------
def prepare(args: argparse.Namespace, workdir: Path) -> dict:
    """Model with its score head, the pairs as the RM stage reads them, and the TRL file in its epoch order."""
    import torch

    from chatforge.models.build import count_parameters
    from chatforge.rm.data import GroupBatches
    from chatforge.rm.model import load_reward_model
    from chatforge.run_dir import RejectLog
    from chatforge.stages import rm

    lm_dir, model_dir = workdir / "lm", workdir / "model"
    tokenizer, _ = common.build_tiny_model(args, lm_dir)
    torch.manual_seed(args.seed)
    model = load_reward_model(str(lm_dir), tokenizer)  # the fresh score head, saved: both sides start from it
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    pairs_path = common.pairs_file(args, workdir)
    spec = {
        "workdir": str(workdir), "model_dir": str(model_dir), "pairs_file": str(pairs_path),
        "max_length": args.max_length, "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
        "seed": args.seed, "profile": args.profile, "threads": args.threads,
    }
    cfg = rm_config(spec, str(workdir / "unused"))
    rejects = RejectLog(None)
    groups, stats = rm.load_groups(cfg, cfg.data.sources, tokenizer, rejects)
    if stats["rankings"]:
        raise SystemExit(f"error: {pairs_path} holds rankings; this benchmark compares pairs only")
    order = GroupBatches(groups, args.batch_size, tokenizer.pad_token_id, args.seed)._order.tolist()
    needed = (args.warmup + args.steps + 1) * args.batch_size
    if len(order) < needed:
        raise SystemExit(f"error: one epoch has {len(order)} pairs, fewer than the {needed} the steps need")
    trl_file = workdir / "trl_pairs.jsonl"
    with open(trl_file, "w", encoding="utf-8") as f:
        for i in order:
            g = groups[i]
            best, worst = (0, 1) if g.ranks[0] < g.ranks[1] else (1, 0)
            f.write(json.dumps({"prompt": g.prompt, "chosen": [{"role": "assistant", "content": g.responses[best]}],
                                "rejected": [{"role": "assistant", "content": g.responses[worst]}]}) + "\n")
    lengths = [max(len(ids) for ids in g.input_ids) for g in groups]
    return spec | {
        "trl_file": str(trl_file), "parameters": count_parameters(model), "vocab": len(tokenizer), "pairs": len(groups),
        "rejected_pairs": rejects.total, "mean_tokens": sum(lengths) / len(lengths), "max_tokens": max(lengths),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(p, batch_size=8, steps=10)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads in every child (torch.set_num_threads); default: torch's own choice")
    p.add_argument("--sides", default="chatforge,trl", help=f"comma-separated subset of {','.join(SIDES)}")
    p.add_argument("--profile", action="store_true",
                   help="cProfile every child; the top of each profile is printed (timings are then not comparable)")
    args = p.parse_args(argv)
    common.check_common_args(p, args)
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = [s for s in args.sides if s not in SIDES]
    if unknown or "trl" not in args.sides or len(args.sides) < 2:
        p.error(f"--sides: unknown {unknown}; choose trl and at least one of {', '.join(SIDES[:-1])}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.spec.read_text())
        result = child_trl(spec) if args.child == "trl" else child_chatforge(spec, args.child)
        args.result.write_text(json.dumps(result))
        return 0

    problem = common.check_trl_env(args.trl_python)
    if problem:
        print(common.missing_trl_message(problem), file=sys.stderr)
        return 2
    trl_version, trl_transformers = common.trl_versions(args.trl_python)
    import torch
    import transformers

    load_before = common.load_average()
    with tempfile.TemporaryDirectory(prefix="bench-rm-trl-") as tmp:
        workdir = Path(tmp)
        spec = prepare(args, workdir)
        spec_path = workdir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        print(
            f"{args.preset} + score head: {spec['parameters'] / 1e6:.2f}M parameters, vocab {spec['vocab']} | "
            f"{spec['pairs']} pairs ({spec['rejected_pairs']} rejected), longest side {spec['mean_tokens']:.0f} tokens on "
            f"average (max {spec['max_tokens']}, max_length {args.max_length}) | Bradley-Terry, LR {LR:g} | "
            f"{args.batch_size} pairs/step, {args.steps} timed + {args.warmup} warm-up steps, {args.repeats} repeats | cpu "
            f"({args.threads or torch.get_num_threads()} threads), fp32, AdamW fused | torch {torch.__version__}, transformers "
            f"{transformers.__version__} | TRL {trl_version} (transformers {trl_transformers}) | load average {load_before}",
            flush=True,
        )
        pythons = {side: (args.trl_python if side == "trl" else sys.executable) for side in args.sides}

        def describe(side, r):
            return f"{args.steps * args.batch_size / r['seconds']:7.2f} pairs/s  peak RSS {r['peak_rss_mib']:7,.0f} MiB"

        runs = common.alternating_runs(SCRIPT, args.sides, pythons, spec_path, workdir, args.repeats, describe)
        if args.profile:
            for path in sorted(workdir.glob("profile-*.txt")):
                print(f"\n==== {path.name} ====\n" + "\n".join(path.read_text().splitlines()[:90]))
    load_after = common.load_average()

    reference = runs["trl"][0]["counts"]
    same_tokens = all(r["counts"] == reference for side in runs for r in runs[side])
    losses = {side: [x["loss"] for x in runs[side][0]["logs"]] for side in runs}
    mine = [side for side in args.sides if side != "trl"]
    first_diff = max(abs(losses[side][0] - losses["trl"][0]) for side in mine)
    n = min(len(v) for v in losses.values())
    max_diff = max(abs(a - b) for side in mine for a, b in zip(losses[side][:n], losses["trl"][:n]))

    pairs_timed = args.steps * args.batch_size
    first, last = args.warmup, args.warmup + args.steps
    rows = {}
    for side, rs in runs.items():
        pps = [pairs_timed / r["seconds"] for r in rs]
        rows[side] = {
            "pairs_per_s": common.median(pps), "pairs_per_s_runs": pps,
            "ms_per_step": 1000 * common.median(r["seconds"] for r in rs) / args.steps,
            "median_step_ms": 1000 * common.median(s for r in rs for s in r["step_seconds"]),
            "peak_rss_mib": common.median(r["peak_rss_mib"] for r in rs),
            "rss_start_mib": common.median(r["rss_start_mib"] for r in rs),
            "positions": sum(rs[0]["positions"][first:last]),
        }
    ratios = {
        side: {
            "pairs_per_s": rows[side]["pairs_per_s"] / rows["trl"]["pairs_per_s"],
            "median_step": rows["trl"]["median_step_ms"] / rows[side]["median_step_ms"],
            "peak_rss": rows[side]["peak_rss_mib"] / rows["trl"]["peak_rss_mib"],
        }
        for side in mine
    }
    tokens = sum(c[0] for c in reference[first:last])

    print(f"\n{pairs_timed} pairs ({2 * pairs_timed} conversations, {tokens:,} tokens) in the {args.steps} timed steps of "
          f"every run; same conversations step by step on all sides: {'yes' if same_tokens else 'NO'}")
    print(f"{'side':15s} {'pairs/s':>8s} {'ms/step':>8s} {'median step':>12s} {'positions':>10s} {'peak RSS':>10s} "
          f"{'RSS at start':>13s}")
    for side in args.sides:
        r = rows[side]
        print(f"{side:15s} {r['pairs_per_s']:8.2f} {r['ms_per_step']:8.1f} {r['median_step_ms']:10.1f}ms {r['positions']:10,} "
              f"{r['peak_rss_mib']:6,.0f} MiB {r['rss_start_mib']:9,.0f} MiB")
    print("(positions: token positions the forwards of the timed steps computed, padding and repeated prompts included)")
    for side in mine:
        q = ratios[side]
        print(f"{side} / TRL: pairs/s {q['pairs_per_s']:.2f}x (target >= {TARGET}) | median single step "
              f"{q['median_step']:.2f}x | peak RSS {q['peak_rss']:.2f}x")
    print(f"|loss chatforge - loss TRL|: {first_diff:.2e} at the first step, {max_diff:.2e} at most over {n} steps")
    print(f"load average (1, 5, 15 min): {load_before} before, {load_after} after")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {k: v for k, v in spec.items() if k not in ("workdir", "model_dir", "trl_file")}
        result |= {
            "preset": args.preset, "repeats": args.repeats, "threads": args.threads or torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": trl_version, "lr": LR, "sides": rows,
            "ratios": ratios,
            "same_tokens": same_tokens, "first_loss_diff": first_diff, "max_loss_diff": max_diff,
            "load_before": load_before, "load_after": load_after,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")

    if not same_tokens:
        print("error: the sides did not train on the same conversations step by step", file=sys.stderr)
        return 1
    if not first_diff <= FIRST_LOSS_TOLERANCE:
        print(f"error: the first losses differ by {first_diff:.2e} > {FIRST_LOSS_TOLERANCE:.0e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
