"""chatforge DPO vs TRL's `DPOTrainer`: the same tiny model, pairs and batch size, side by side in one run.

    bash bench/trl_env.sh                              # once: TRL in its own venv, bench/.venv-trl
    .venv/bin/python bench/dpo_vs_trl.py               # llama-10m, 8 pairs per step, 10 timed steps, 2 repeats
    .venv/bin/python bench/dpo_vs_trl.py --trl-head plain --json runs/dpo_vs_trl.json

What is compared. Four sides, each a fresh subprocess that loads the same saved weights (a chatforge
preset built with a fixed seed, and a byte-level BPE tokenizer with chatforge's ChatML template, as
bench/sft_vs_trl.py builds them) and trains them with sigmoid DPO (beta 0.1) on the task world's
preference pairs:
  chatforge-live  `chatforge.stages.dpo.run` (the `chatforge dpo` stage), `reference_mode=live`: a frozen
                  copy of the starting model scores every batch;
  chatforge-pre   the same stage, `reference_mode=precomputed` (its default): the reference log-probs of
                  every training pair are computed once before training;
  trl-live        `trl.DPOTrainer`, `precompute_ref_log_probs=False` (its default): a reference model
                  loaded beside the policy scores every batch;
  trl-pre         `trl.DPOTrainer`, `precompute_ref_log_probs=True`, `precompute_ref_batch_size` = chatforge's
                  `eval_batch_size` (16): reference log-probs of the whole training set before training.
All: fp32 (`bf16=False`), no gradient checkpointing, AdamW (fused, betas 0.9/0.999, eps 1e-8, no weight
decay), constant LR, clipping at 1.0, no accumulation, `--batch-size` pairs per step (2x that many
rows: chosen and rejected in one forward on both sides), `--max-length` tokens per conversation, no
evaluation, no checkpoint in the timed steps, metrics logged every step.

Same data, same order, same tokens. chatforge lays out an epoch as a seeded permutation of the pairs
(`data.group_by_length=false`); the script reads that order and hands TRL the whole epoch in it
(conversational records: prompt messages, `chosen`/`rejected` as one assistant message) with
`train_sampling_strategy="sequential"`. Both render prompt + answer with the same chat template, so the
rows are the same token ids. TRL's completion is "prompt + answer minus the prompt with the generation
prompt", i.e. answer + `<|im_end|>` + the template's trailing newline; chatforge scores the
`{% generation %}` span, answer + `<|im_end|>`. So that both score the same tokens, the TRL side's
collator drops that one trailing newline from the completion mask (the newline stays in the input on
both sides). The script checks that every timed step saw the same non-pad and scored tokens on all
sides, and compares the step-1 policy log-probs (`logps/chosen`, `logps/rejected`) and the losses.

How it is timed (as bench/sft_vs_trl.py). One `perf_counter` stamp per optimizer step (chatforge in
`PairBatches.next_batch`, TRL in `TrainerCallback.on_step_begin`); pairs/s = pairs in the `--steps`
steps after `--warmup` / that span. The reference pre-pass is timed apart (chatforge:
`cached_reference_logps`, hashing + forwards + cache write; TRL: `DPOTrainer._precompute_ref_logps`,
forwards + datasets cache), and the table adds an end-to-end figure for one epoch of the training
pairs: pre-pass + epoch pairs / pairs/s. Peak memory = `ru_maxrss` of the child (imports included);
the RSS before training is printed beside it. Repeats alternate the order of the sides; the table
gives medians and the ratios chatforge / TRL. Exit 0 whatever the ratios, 2 without the TRL venv,
1 when the sides did not see the same tokens or their step-1 log-probs differ.
"""

from __future__ import annotations

# Only the standard library at module level: the TRL child runs this file in a venv without chatforge.
import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _trl_common as common  # noqa: E402

SCRIPT = Path(__file__).resolve()
BETA = 0.1
LR = 1e-5
REF_BATCH = 16  # chatforge's eval_batch_size default; TRL's precompute_ref_batch_size
LOGP_TOLERANCE = 1e-3  # relative, step-1 policy log-probs
SIDES = ("chatforge-live", "chatforge-pre", "trl-live", "trl-pre")
TARGETS = {  # (chatforge side, TRL side): target of the pairs/s ratio
    ("chatforge-pre", "trl-live"): 2.0, ("chatforge-live", "trl-live"): 2.0, ("chatforge-pre", "trl-pre"): 1.5,
}


# ---- chatforge, in its own process ----------------------------------------------------------------
def child_chatforge(spec: dict, mode: str) -> dict:
    import torch
    from pydantic import TypeAdapter

    import chatforge.dpo.objective
    from chatforge.dpo.config import DPOLossConfig
    from chatforge.dpo.data import PairBatches
    from chatforge.engine.config import OptimConfig, TrainConfig
    from chatforge.engine.log import read_metrics
    from chatforge.engine.schedules import ScheduleConfig
    from chatforge.stages import dpo

    clock = common.StepClock()
    original_next = PairBatches.next_batch

    def next_batch(self):
        clock.stamp()
        batch = original_next(self)
        clock.counts.append([int(batch["attention_mask"].sum()), int((batch["labels"] != -100).sum())])
        return batch

    PairBatches.next_batch = next_batch
    original_ref = chatforge.dpo.objective.cached_reference_logps

    def cached_reference_logps(path, model, sets, *args, **kwargs):
        start = time.perf_counter()
        out = original_ref(path, model, sets, *args, **kwargs)
        if "train" in sets:
            clock.extra["ref_seconds"] = time.perf_counter() - start
            clock.extra["ref_pairs"] = len(sets["train"])
        return out

    chatforge.dpo.objective.cached_reference_logps = cached_reference_logps
    out = Path(spec["workdir"]) / f"chatforge-{mode}-{time.time_ns()}"
    cfg = dpo.Config(
        out=str(out), model=spec["model_dir"], reference_mode=mode,
        loss=DPOLossConfig(loss="sigmoid", beta=BETA),
        data=dpo.DPODataConfig(sources=[{"path": spec["pairs_file"]}], max_length=spec["max_length"], truncation="drop",
                               group_by_length=False),
        train=TrainConfig(
            max_steps=spec["warmup"] + spec["steps"] + 1, micro_batch_size=spec["batch_size"], seed=spec["seed"],
            precision="fp32", device="cpu", log_every=1, eval_every=0, save_every=0, resume="never", progress=False,
        ),
        optim=OptimConfig(lr=LR, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8, max_grad_norm=1.0, implementation="fused"),
        schedule=TypeAdapter(ScheduleConfig).validate_python({"kind": "constant", "warmup_steps": 0}),
        eval_batch_size=REF_BATCH,
    )
    torch.manual_seed(spec["seed"])
    clock.rss_start = common.rss_now_mib()
    if spec.get("profile"):
        common.profiled(lambda: dpo.run(cfg), Path(spec["workdir"]) / f"profile-chatforge-{mode}.txt")
    else:
        dpo.run(cfg)
    for row in read_metrics(out / "metrics.jsonl"):
        if "loss" in row:
            clock.logs.append({k: row[k] for k in ("loss", "logps/chosen", "logps/rejected") if k in row})
    return clock.result(spec)


# ---- TRL, in its own process and venv -------------------------------------------------------------
def child_trl(spec: dict, mode: str) -> dict:
    import datasets
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    clock = common.StepClock()

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            clock.stamp()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                clock.logs.append({k: float(logs[k]) for k in ("loss", "logps/chosen", "logps/rejected") if k in logs})

    class BenchDPOTrainer(DPOTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            if model.training:
                clock.counts.append([int(inputs["attention_mask"].sum()), int(inputs["completion_mask"].sum())])
            return super().compute_loss(model, inputs, *args, **kwargs)

        def _precompute_ref_logps(self, dataset, name, batch_size):
            start = time.perf_counter()
            out = super()._precompute_ref_logps(dataset, name, batch_size)
            if name == "train":
                clock.extra["ref_seconds"] = time.perf_counter() - start
                clock.extra["ref_pairs"] = len(dataset)
            return out

    if spec["trl_head"] == "plain":
        import trl.trainer.dpo_trainer

        trl.trainer.dpo_trainer.add_fused_lm_head = common.add_plain_lm_head
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if len(newline) != 1:
        raise RuntimeError(f"'\\n' is {len(newline)} tokens for this tokenizer, expected 1")
    collator = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id, max_length=spec["max_length"],
                                         truncation_mode="keep_start", pad_to_multiple_of=None)

    def collate(examples):
        # Score answer + <|im_end|> as chatforge does: the template's newline after <|im_end|> stays in the
        # input but leaves TRL's completion mask.
        batch = collator(examples)
        ids, mask = batch["input_ids"], batch["completion_mask"]
        last = batch["attention_mask"].sum(1) - 1
        rows = torch.arange(ids.shape[0])
        trailing = (ids[rows, last] == newline[0]) & (ids[rows, (last - 1).clamp(min=0)] == im_end)
        mask[rows[trailing], last[trailing]] = 0
        return batch

    out = Path(spec["workdir"]) / f"trl-{mode}-{time.time_ns()}"
    args = DPOConfig(
        output_dir=str(out), max_steps=spec["warmup"] + spec["steps"] + 1, per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch_fused", adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, weight_decay=0.0,
        max_grad_norm=1.0, bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, seed=spec["seed"],
        max_length=spec["max_length"], truncation_mode="keep_start", beta=BETA, loss_type=["sigmoid"],
        precompute_ref_log_probs=mode == "precomputed", precompute_ref_batch_size=REF_BATCH,
        train_sampling_strategy="sequential", eval_strategy="no", save_strategy="no", logging_steps=1,
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, dataset_num_proc=None,
    )
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    dataset = datasets.load_dataset("json", data_files=spec["trl_file"], split="train")
    torch.manual_seed(spec["seed"])
    clock.rss_start = common.rss_now_mib()  # before the trainer loads its reference model and tokenizes
    trainer = BenchDPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                              data_collator=collate, callbacks=[Clock()])
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
    if spec.get("profile"):
        common.profiled(trainer.train, Path(spec["workdir"]) / f"profile-trl-{mode}.txt")
    else:
        trainer.train()
    return clock.result(spec)


# ---- the parent ------------------------------------------------------------------------------------
def prepare(args: argparse.Namespace, workdir: Path) -> dict:
    """Model, tokenizer, the pairs as the DPO stage encodes them, and the TRL data file in its epoch order."""
    from chatforge.dpo.data import PairBatches, PairSourceConfig, encode_pairs, read_pairs
    from chatforge.models.build import count_parameters
    from chatforge.run_dir import RejectLog

    model_dir = workdir / "model"
    tokenizer, model = common.build_tiny_model(args, model_dir)
    pairs_path = common.pairs_file(args, workdir)
    rejects = RejectLog(None)
    encoded = encode_pairs(tokenizer, read_pairs([PairSourceConfig(path=str(pairs_path))], rejects), rejects,
                           args.max_length, "drop", "auto")
    order = PairBatches(encoded, args.batch_size, tokenizer.pad_token_id, seed=args.seed, group_by_length=False)._epoch_order(0)
    needed = (args.warmup + args.steps + 1) * args.batch_size
    if len(order) < needed:
        raise SystemExit(f"error: one epoch has {len(order)} pairs, fewer than the {needed} the steps need")
    trl_file = workdir / "trl_pairs.jsonl"
    with open(trl_file, "w", encoding="utf-8") as f:
        for i in order:  # the whole epoch: TRL's pre-pass covers the same pairs as chatforge's
            p = encoded[i].pair
            f.write(json.dumps({"prompt": p.prompt, "chosen": [{"role": "assistant", "content": p.chosen}],
                                "rejected": [{"role": "assistant", "content": p.rejected}]}) + "\n")
    lengths = [max(len(e.chosen_ids), len(e.rejected_ids)) for e in encoded]
    return {
        "workdir": str(workdir), "model_dir": str(model_dir), "pairs_file": str(pairs_path), "trl_file": str(trl_file),
        "max_length": args.max_length, "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
        "seed": args.seed, "trl_head": args.trl_head, "profile": args.profile,
        "parameters": count_parameters(model), "vocab": len(tokenizer), "pairs": len(encoded),
        "rejected_pairs": rejects.total, "mean_tokens": sum(lengths) / len(lengths), "max_tokens": max(lengths),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(p, batch_size=8, steps=10)
    p.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated subset of {','.join(SIDES)}")
    p.add_argument("--trl-head", choices=("fused", "plain"), default="fused",
                   help="fused: TRL as shipped (its chunked log-prob LM head; a torch fallback on CPU); plain: full logits")
    p.add_argument("--profile", action="store_true",
                   help="cProfile every child; the top of each profile is printed (timings are then not comparable)")
    args = p.parse_args(argv)
    common.check_common_args(p, args)
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = [s for s in args.sides if s not in SIDES]
    if unknown or not args.sides:
        p.error(f"--sides: unknown {unknown}; choose from {', '.join(SIDES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.spec.read_text())
        lib, mode = args.child.split("-")
        mode = {"pre": "precomputed", "live": "live"}[mode]
        result = (child_chatforge if lib == "chatforge" else child_trl)(spec, mode)
        args.result.write_text(json.dumps(result))
        return 0

    problem = common.check_trl_env(args.trl_python) if any(s.startswith("trl") for s in args.sides) else None
    if problem:
        print(common.missing_trl_message(problem), file=sys.stderr)
        return 2
    trl_version, trl_transformers = common.trl_versions(args.trl_python)
    import torch
    import transformers

    load_before = common.load_average()
    with tempfile.TemporaryDirectory(prefix="bench-dpo-trl-") as tmp:
        workdir = Path(tmp)
        spec = prepare(args, workdir)
        spec_path = workdir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        print(
            f"{args.preset}: {spec['parameters'] / 1e6:.2f}M parameters, vocab {spec['vocab']} | {spec['pairs']} pairs "
            f"({spec['rejected_pairs']} rejected), longest side {spec['mean_tokens']:.0f} tokens on average (max "
            f"{spec['max_tokens']}, max_length {args.max_length}) | sigmoid DPO beta {BETA}, LR {LR:g} | {args.batch_size} "
            f"pairs/step, {args.steps} timed + {args.warmup} warm-up steps, {args.repeats} repeats | cpu "
            f"({torch.get_num_threads()} threads), fp32, AdamW fused | torch {torch.__version__}, transformers "
            f"{transformers.__version__} | TRL {trl_version} (transformers {trl_transformers}), {args.trl_head} LM head "
            f"| load average {load_before}",
            flush=True,
        )
        pythons = {s: (sys.executable if s.startswith("chatforge") else args.trl_python) for s in args.sides}

        def describe(side, r):
            ref = f"  reference pre-pass {r['ref_seconds']:6.1f} s" if "ref_seconds" in r else ""
            return (f"{args.steps * args.batch_size / r['seconds']:7.2f} pairs/s  peak RSS {r['peak_rss_mib']:7,.0f} MiB{ref}")

        runs = common.alternating_runs(SCRIPT, args.sides, pythons, spec_path, workdir, args.repeats, describe)
        if args.profile:
            for path in sorted(workdir.glob("profile-*.txt")):
                print(f"\n==== {path.name} ====\n" + "\n".join(path.read_text().splitlines()[:90]))
    load_after = common.load_average()

    # Same data: every side and run trained on the same tokens step by step.
    reference = runs[args.sides[0]][0]["counts"]
    same_tokens = all(r["counts"] == reference for side in runs for r in runs[side])
    first_logs = {side: runs[side][0]["logs"][0] for side in runs}
    logp_diff = {}
    for key in ("logps/chosen", "logps/rejected"):
        values = [first_logs[s][key] for s in runs if key in first_logs[s]]
        logp_diff[key] = (max(values) - min(values)) / max(abs(v) for v in values) if len(values) > 1 else 0.0
    loss_diff = {}
    for a, b in (("chatforge-live", "trl-live"), ("chatforge-pre", "trl-pre"), ("chatforge-live", "chatforge-pre")):
        if a in runs and b in runs:
            la, lb = [x["loss"] for x in runs[a][0]["logs"]], [x["loss"] for x in runs[b][0]["logs"]]
            loss_diff[f"{a} vs {b}"] = max(abs(x - y) for x, y in zip(la, lb))

    pairs_timed = args.steps * args.batch_size
    rows = {}
    for side, rs in runs.items():
        pps = [pairs_timed / r["seconds"] for r in rs]
        row = {
            "pairs_per_s": common.median(pps), "pairs_per_s_runs": pps,
            "ms_per_step": 1000 * common.median(r["seconds"] for r in rs) / args.steps,
            "median_step_ms": 1000 * common.median(s for r in rs for s in r["step_seconds"]),
            "peak_rss_mib": common.median(r["peak_rss_mib"] for r in rs),
            "rss_start_mib": common.median(r["rss_start_mib"] for r in rs),
            "ref_seconds": common.median(r["ref_seconds"] for r in rs) if "ref_seconds" in rs[0] else 0.0,
        }
        epoch = spec["pairs"]
        row["epoch_seconds"] = row["ref_seconds"] + epoch / row["pairs_per_s"]
        row["epoch_pairs_per_s"] = epoch / row["epoch_seconds"]
        rows[side] = row

    tokens = sum(c[0] for c in reference[args.warmup:])
    scored = sum(c[1] for c in reference[args.warmup:])
    print(f"\n{pairs_timed} pairs ({2 * pairs_timed} rows, {tokens:,} non-pad tokens, {scored:,} scored answer tokens) in the "
          f"{args.steps} timed steps of every run; same tokens step by step on all sides: {'yes' if same_tokens else 'NO'}")
    print(f"{'side':15s} {'pairs/s':>8s} {'ms/step':>8s} {'median step':>12s} {'peak RSS':>10s} {'RSS at start':>13s} "
          f"{'ref pre-pass':>13s} {'epoch e2e':>10s} {'e2e pairs/s':>12s}")
    for side, r in rows.items():
        ref = f"{r['ref_seconds']:11.1f} s" if r["ref_seconds"] else f"{'-':>13s}"
        print(f"{side:15s} {r['pairs_per_s']:8.2f} {r['ms_per_step']:8.1f} {r['median_step_ms']:10.1f}ms "
              f"{r['peak_rss_mib']:6,.0f} MiB {r['rss_start_mib']:9,.0f} MiB {ref} {r['epoch_seconds']:8.1f} s "
              f"{r['epoch_pairs_per_s']:12.2f}")
    print(f"(epoch e2e: reference pre-pass + {spec['pairs']} pairs at the side's pairs/s)")
    ratios = {}
    for a in (s for s in rows if s.startswith("chatforge")):
        for b in (s for s in rows if s.startswith("trl")):
            ra, rb = rows[a], rows[b]
            ratio = {
                "pairs_per_s": ra["pairs_per_s"] / rb["pairs_per_s"],
                "median_step": rb["median_step_ms"] / ra["median_step_ms"],
                "epoch_e2e": ra["epoch_pairs_per_s"] / rb["epoch_pairs_per_s"],
                "peak_rss": ra["peak_rss_mib"] / rb["peak_rss_mib"],
            }
            ratios[f"{a} / {b}"] = ratio
            target = TARGETS.get((a, b))
            mem = " (target <= 0.7)" if b == "trl-live" else ""
            print(f"{a} / {b}: pairs/s {ratio['pairs_per_s']:.2f}x" + (f" (target >= {target})" if target else "")
                  + f" | median step {ratio['median_step']:.2f}x | epoch e2e {ratio['epoch_e2e']:.2f}x"
                  + f" | peak RSS {ratio['peak_rss']:.2f}x{mem}")
    print("step-1 policy log-probs (mean over the pairs) per side: " + " | ".join(
        f"{s} {first_logs[s].get('logps/chosen', math.nan):.6f} / {first_logs[s].get('logps/rejected', math.nan):.6f}"
        for s in runs))
    print("step-1 policy log-probs, largest relative spread over the sides: "
          + ", ".join(f"{k} {v:.1e}" for k, v in logp_diff.items()))
    if loss_diff:
        print("largest |loss difference| over the logged steps: " + ", ".join(f"{k} {v:.2e}" for k, v in loss_diff.items()))
    print(f"load average (1, 5, 15 min): {load_before} before, {load_after} after")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {k: v for k, v in spec.items() if k not in ("workdir", "model_dir", "trl_file")}
        result |= {
            "preset": args.preset, "repeats": args.repeats, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": trl_version, "beta": BETA, "lr": LR, "sides": rows,
            "ratios": ratios, "same_tokens": same_tokens, "step1_logs": first_logs, "step1_logp_rel_spread": logp_diff, "max_loss_diff": loss_diff,
            "load_before": load_before, "load_after": load_after,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")

    if not same_tokens:
        print("error: the sides did not train on the same tokens step by step", file=sys.stderr)
        return 1
    if not all(v <= LOGP_TOLERANCE or math.isnan(v) for v in logp_diff.values()):
        print(f"error: the step-1 policy log-probs differ by more than {LOGP_TOLERANCE:.0e} (relative)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
