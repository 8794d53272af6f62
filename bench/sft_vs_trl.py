"""chatforge SFT vs TRL's `SFTTrainer`: the same tiny model, data and batch size, side by side in one run.

    bash bench/trl_env.sh                              # once: TRL in its own venv, bench/.venv-trl
    .venv/bin/python bench/sft_vs_trl.py               # llama-10m, 8 conversations per step, 10 timed steps, 2 repeats
    .venv/bin/python bench/sft_vs_trl.py --preset llama-1m --json runs/sft_vs_trl.json

What is compared. The script (run with chatforge's venv) writes the tiny world's instruction data
(`chatforge.world.write_world`, OpenAI `messages` records), trains a byte-level BPE tokenizer with
chatforge's ChatML template (its answers sit in `{% generation %}` blocks), builds one model from a
preset with a fixed seed and saves model + tokenizer to a temporary directory. Every run then starts
a fresh subprocess that loads those same weights and trains them:
  (a) chatforge: `chatforge.stages.sft.run` (the `chatforge sft` stage) with `data.packing=pad`
      (one conversation per row, right-padded to the longest row of the micro-batch, attention mask)
      and `data.group_by_length=false`; run with this venv's python;
  (b) TRL: `trl.SFTTrainer` with `packing=False` (TRL pads to the longest row of the micro-batch too)
      and `assistant_only_loss=True`: the loss covers the tokens inside the template's
      `{% generation %}` blocks, each answer and its `<|im_end|>`, which are exactly the tokens
      chatforge's answer-only masking supervises (the script checks the counts step by step);
      run with bench/.venv-trl's python, which has trl/transformers/datasets and no chatforge.
Both: fp32 (`bf16=False`), no gradient checkpointing, AdamW (fused kernel, betas 0.9/0.999, eps 1e-8,
no weight decay), constant LR 1e-4 with no warm-up, gradient clipping at 1.0, no gradient
accumulation, the same `--batch-size` conversations per step and the same `--seq-len` (longer
conversations are cut at the right on both sides), no evaluation, no checkpoint inside the timed steps,
the loss logged every step. Same batches: chatforge lays out an epoch as a seeded permutation of the
conversations; the script reads that order and hands TRL the conversations in it, with
`train_sampling_strategy="sequential"`, so step k of both sides trains on the same conversations,
padded to the same width. The script checks that each timed step saw the same non-pad tokens and the
same supervised tokens on both sides, and prints the largest per-step loss difference (the first
step's must agree: same weights, same data, same loss).

How it is timed. Each side reads `time.perf_counter()` once per optimizer step: chatforge when the
engine asks `SFTBatches.next_batch` for the step's batch (before it is collated), TRL in a
`TrainerCallback.on_step_begin` (after the batch is collated). The span from step `warmup` to step
`warmup + steps` covers `steps` whole iterations on both sides (fetch and collate, forward, backward,
clipping, optimizer, logging), and each side runs one step more than is timed so that its end of
training (chatforge's final checkpoint, TRL's teardown) stays outside. tokens/s = non-pad input
tokens of the timed steps (the sum of the attention mask, counted from the batches each side
actually trains on) / the timed span. Peak memory = `ru_maxrss` of the child process (peak resident
set size, read by the child at its end through `resource.getrusage(RUSAGE_SELF)`), the same for both;
it includes each library's imports, and the RSS before training starts is printed beside it.
Repeats alternate the order (chatforge, trl, trl, chatforge, ...); the table reports the medians and
the ratios chatforge / TRL of those medians.

The ratios are measurements, not tests (the target is tokens/s >= 1.5x TRL's, peak memory no
higher): the script exits 0 whatever they are, 2 when the TRL environment is missing, and 1 when the
two sides did not train on the same tokens or their first losses differ.
"""

from __future__ import annotations

# Only the standard library at module level: the TRL child runs this file in a venv without chatforge.
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_TRL_PYTHON = HERE / ".venv-trl" / "bin" / "python"
FIRST_LOSS_TOLERANCE = 1e-3
LR = 1e-4


def rss_now_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_result(stamps: list[float], counts: list[tuple[int, int]], losses: list[float], spec: dict, rss_start: float) -> dict:
    first, last = spec["warmup"], spec["warmup"] + spec["steps"]
    if len(stamps) <= last:
        raise RuntimeError(f"only {len(stamps)} steps were stamped, {last + 1} needed")
    return {
        "seconds": stamps[last] - stamps[first],
        "step_seconds": [b - a for a, b in zip(stamps[first:last], stamps[first + 1 : last + 1])],
        "tokens": sum(c[0] for c in counts[first:last]),
        "counts": counts[:last],
        "losses": losses,
        "rss_start_mib": rss_start,
        "peak_rss_mib": peak_rss_mib(),
    }


# ---- (a) chatforge, in its own process ------------------------------------------------------------
def child_chatforge(spec: dict) -> dict:
    import torch
    from pydantic import TypeAdapter

    from chatforge.engine.config import OptimConfig, TrainConfig
    from chatforge.engine.log import read_metrics
    from chatforge.engine.schedules import ScheduleConfig
    from chatforge.sft.batches import SFTBatches
    from chatforge.stages import sft

    stamps: list[float] = []
    counts: list[tuple[int, int]] = []
    original = SFTBatches.next_batch

    def next_batch(self):
        stamps.append(time.perf_counter())
        batch = original(self)
        counts.append((int(batch["attention_mask"].sum()), int((batch["labels"] != -100).sum())))
        return batch

    SFTBatches.next_batch = next_batch
    if spec["chatforge_head"] == "full":
        import chatforge.sft.objective

        chatforge.sft.objective.separable_head = lambda model: None  # every model takes the full-logits path
    out = Path(spec["workdir"]) / f"chatforge-run-{os.getpid()}"
    cfg = sft.Config(
        out=str(out), model=spec["model_dir"],
        data=sft.SFTDataConfig(
            sources=[{"path": spec["train_file"]}], seq_len=spec["seq_len"], packing="pad", truncation="right",
            group_by_length=False,
        ),
        train=TrainConfig(
            max_steps=spec["warmup"] + spec["steps"] + 1, micro_batch_size=spec["batch_size"], seed=spec["seed"],
            precision="fp32", device="cpu", log_every=1, eval_every=0, save_every=0, resume="never", progress=False,
        ),
        optim=OptimConfig(lr=LR, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8, max_grad_norm=1.0, implementation="fused"),
        schedule=TypeAdapter(ScheduleConfig).validate_python({"kind": "constant", "warmup_steps": 0}),
        eval_before=False,
    )
    torch.manual_seed(spec["seed"])
    rss_start = rss_now_mib()
    sft.run(cfg)
    losses = [row["loss"] for row in read_metrics(out / "metrics.jsonl") if "loss" in row]
    return child_result(stamps, counts, losses, spec, rss_start)


# ---- (b) TRL, in its own process and venv ----------------------------------------------------------
def child_trl(spec: dict) -> dict:
    import datasets
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    stamps: list[float] = []
    counts: list[tuple[int, int]] = []
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    class CountingSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            if model.training:
                counts.append((int(inputs["attention_mask"].sum()), int((inputs["labels"] != -100).sum())))
            return super().compute_loss(model, inputs, *args, **kwargs)

    if spec["trl_head"] == "plain":
        import trl.trainer.sft_trainer

        trl.trainer.sft_trainer.add_fused_lm_head = add_plain_lm_head
    out = Path(spec["workdir"]) / f"trl-run-{os.getpid()}"
    args = SFTConfig(
        output_dir=str(out), max_steps=spec["warmup"] + spec["steps"] + 1, per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch_fused", adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, weight_decay=0.0,
        max_grad_norm=1.0, bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, seed=spec["seed"],
        max_length=spec["seq_len"], truncation_mode="keep_start", packing=False, padding_free=False,
        assistant_only_loss=True, train_sampling_strategy="sequential", shuffle_dataset=False,
        eval_strategy="no", save_strategy="no", logging_steps=1, report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, dataset_num_proc=None,
    )
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    dataset = datasets.load_dataset("json", data_files=spec["trl_file"], split="train")
    trainer = CountingSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                 callbacks=[Clock()])
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
    torch.manual_seed(spec["seed"])
    rss_start = rss_now_mib()
    trainer.train()
    return child_result(stamps, counts, losses, spec, rss_start)


def add_plain_lm_head(model, outputs=("log_probs",), **_):
    """`--trl-head plain`: TRL's `fused_lm_head=True` call answered from the model's full logits.

    TRL 1.x computes the loss through a chunked log-prob kernel (`trl.kernels.chunked_logprob`): Triton
    on CUDA, and on CPU a torch fallback that folds every vocabulary tile in several element-wise passes.
    This replacement returns the same fields (`log_probs`, `entropy`, `is_top1`, `label_mask`, `loss`)
    from one `log_softmax` over the full logits, as a plain `transformers` loss does, so the comparison
    can be made against TRL without its CPU fallback.
    """
    import functools
    import types

    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    original = model.forward

    @functools.wraps(type(model).forward)
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head:
            extra = {"labels": labels, "shift_labels": shift_labels, "num_items_in_batch": num_items_in_batch}
            return original(*args, **kwargs, **{k: v for k, v in extra.items() if v is not None})
        kwargs["use_cache"] = False
        logits = original(*args, **kwargs).logits
        if shift_labels is None:
            logits, labels = logits[:, :-1], labels[:, 1:]
        else:
            labels = shift_labels
        mask = labels != -100
        log_probs_all = logits.float().log_softmax(-1)
        log_probs = log_probs_all.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1).masked_fill(~mask, 0.0)
        with torch.no_grad():
            entropy = -(log_probs_all.exp() * log_probs_all).sum(-1).masked_fill(~mask, 0.0)
            is_top1 = (log_probs_all.argmax(-1) == labels) & mask
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / count, log_probs=log_probs, entropy=entropy, is_top1=is_top1, label_mask=mask
        )

    model.forward = types.MethodType(forward, model)


# ---- the parent: data, model, runs, table ---------------------------------------------------------
def prepare(args: argparse.Namespace, workdir: Path) -> dict:
    """World data, tokenizer, model and the TRL data file in chatforge's batch order; the children's spec."""
    from transformers.utils import logging as hf_logging

    from chatforge.models.build import ModelConfig, build_model, count_parameters
    from chatforge.run_dir import RejectLog
    from chatforge.sft.batches import Example, SFTBatches
    from chatforge.sft.formats import ChatSourceConfig, read_conversations
    from chatforge.sft.masking import encode_conversations
    from chatforge.tokenizer.load import load_tokenizer
    from chatforge.tokenizer.train import TokenizerConfig, save_tokenizer, train_tokenizer
    from chatforge.world.write import write_world

    hf_logging.disable_progress_bar()
    write_world(workdir / "world", size="small")
    train_file = workdir / "world" / "instructions" / "train.jsonl"
    model_dir = workdir / "model"
    tok_cfg = TokenizerConfig(vocab_size=args.vocab_size, max_documents=args.tokenizer_documents, out=str(model_dir))
    save_tokenizer(train_tokenizer(tok_cfg, RejectLog(None)), model_dir)
    tokenizer = load_tokenizer(model_dir)
    model = build_model(ModelConfig(preset=args.preset), tokenizer, seed=args.seed)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    # The conversations as the SFT stage reads and encodes them, and the order of its first epoch.
    rejects = RejectLog(None)
    conversations, examples = [], []
    for conversation, enc in encode_conversations(
        tokenizer, read_conversations([ChatSourceConfig(path=str(train_file))], rejects), rejects, args.seq_len, "right"
    ):
        conversations.append(conversation)
        examples.append(Example(enc.input_ids, enc.labels))
    layout = SFTBatches(examples, args.batch_size, args.seq_len, tokenizer.pad_token_id, "pad", seed=args.seed,
                        group_by_length=False)
    order = [row[0] for row in layout._rows]  # pad mode: one example per row
    needed = (args.warmup + args.steps + 1) * args.batch_size
    if len(order) < needed:
        raise SystemExit(f"error: one epoch has {len(order)} conversations, fewer than the {needed} the steps need")
    trl_file = workdir / "trl_train.jsonl"
    with open(trl_file, "w", encoding="utf-8") as f:
        for i in order[:needed]:
            f.write(json.dumps({"messages": conversations[i].messages}) + "\n")
    lengths = [len(e.input_ids) for e in examples]
    return {
        "workdir": str(workdir), "model_dir": str(model_dir), "train_file": str(train_file), "trl_file": str(trl_file),
        "seq_len": args.seq_len, "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
        "seed": args.seed, "parameters": count_parameters(model), "vocab": len(tokenizer),
        "conversations": len(examples), "mean_tokens": statistics.mean(lengths), "max_tokens": max(lengths),
        "truncated": sum(n >= args.seq_len for n in lengths),
    }


def run_child(side: str, python: str, spec_path: Path, result_path: Path) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cmd = [python, str(Path(__file__).resolve()), "--child", side, "--spec", str(spec_path), "--result", str(result_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"error: the {side} run failed (exit {proc.returncode}); its output is above")
    return json.loads(result_path.read_text())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="llama-10m", help="chatforge model preset (llama-1m, llama-10m, ...)")
    p.add_argument("--vocab-size", type=int, default=8192, help="vocabulary of the tokenizer trained for the run")
    p.add_argument("--tokenizer-documents", type=int, default=2000, help="documents the tokenizer is trained on")
    p.add_argument("--seq-len", type=int, default=512, help="max tokens per conversation (both sides)")
    p.add_argument("--batch-size", type=int, default=8, help="conversations per optimizer step (both sides)")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps per run")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of every run")
    p.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating their order")
    p.add_argument("--seed", type=int, default=1234, help="seed for the weights and the data order")
    p.add_argument("--trl-head", choices=("fused", "plain"), default="fused",
                   help="fused: TRL as shipped (its chunked log-prob LM head); plain: TRL with full logits instead")
    p.add_argument("--chatforge-head", choices=("supervised", "full"), default="supervised",
                   help="supervised: chatforge as shipped (LM head on answer positions only); full: logits everywhere")
    p.add_argument("--trl-python", default=str(DEFAULT_TRL_PYTHON), help="python of the TRL venv (bench/trl_env.sh)")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    p.add_argument("--child", choices=("chatforge", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("vocab_size", "seq_len", "batch_size", "steps", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def check_trl_env(python: str) -> str | None:
    """None when `python` can import trl, else why not."""
    if not Path(python).exists():
        return f"{python} does not exist"
    probe = subprocess.run([python, "-c", "import trl, datasets, transformers"], capture_output=True, text=True)
    return None if probe.returncode == 0 else probe.stderr.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.spec.read_text())
        result = (child_chatforge if args.child == "chatforge" else child_trl)(spec)
        args.result.write_text(json.dumps(result))
        return 0

    problem = check_trl_env(args.trl_python)
    if problem:
        print(f"error: no TRL environment ({problem}).\nCreate it with:  bash bench/trl_env.sh\n"
              "(or pass --trl-python PATH to a python that has trl installed)", file=sys.stderr)
        return 2
    trl_version = subprocess.run([args.trl_python, "-c", "import trl, transformers; print(trl.__version__, transformers.__version__)"],
                                 capture_output=True, text=True).stdout.split()
    import torch
    import transformers

    with tempfile.TemporaryDirectory(prefix="bench-sft-trl-") as tmp:
        workdir = Path(tmp)
        spec = prepare(args, workdir)
        spec["trl_head"], spec["chatforge_head"] = args.trl_head, args.chatforge_head
        spec_path = workdir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        print(
            f"{args.preset}: {spec['parameters'] / 1e6:.2f}M parameters, vocab {spec['vocab']} | {spec['conversations']} "
            f"conversations, {spec['mean_tokens']:.0f} tokens on average (max {spec['max_tokens']}, seq_len {args.seq_len}, "
            f"{spec['truncated']} truncated) | {args.batch_size} conversations/step, padded to the longest, "
            f"{args.steps} timed + {args.warmup} warm-up steps, {args.repeats} repeats | cpu ({torch.get_num_threads()} "
            f"threads), fp32, AdamW fused | torch {torch.__version__}, transformers {transformers.__version__} | "
            f"chatforge {args.chatforge_head} LM head, TRL {trl_version[0]} (transformers {trl_version[1]}) {args.trl_head} LM head",
            flush=True,
        )
        pythons = {"chatforge": sys.executable, "trl": args.trl_python}
        runs: dict[str, list[dict]] = {"chatforge": [], "trl": []}
        for rep in range(args.repeats):
            order = ("chatforge", "trl") if rep % 2 == 0 else ("trl", "chatforge")
            for side in order:
                r = run_child(side, pythons[side], spec_path, workdir / f"{side}-{rep}.json")
                runs[side].append(r)
                print(f"  repeat {rep + 1}/{args.repeats} {side:9s} {r['tokens'] / r['seconds']:9,.0f} tok/s  "
                      f"peak RSS {r['peak_rss_mib']:7,.0f} MiB", flush=True)

    # Same data: every side and run must have trained on the same tokens step by step.
    reference = runs["chatforge"][0]["counts"]
    same_tokens = all(r["counts"] == reference for side in runs for r in runs[side])
    first_diff = abs(runs["chatforge"][0]["losses"][0] - runs["trl"][0]["losses"][0])
    n = min(len(runs["chatforge"][0]["losses"]), len(runs["trl"][0]["losses"]))
    max_diff = max(abs(a - b) for a, b in zip(runs["chatforge"][0]["losses"][:n], runs["trl"][0]["losses"][:n]))

    rows = {}
    for side, rs in runs.items():
        tok_s = [r["tokens"] / r["seconds"] for r in rs]
        rows[side] = {
            "tokens_per_s": statistics.median(tok_s), "tokens_per_s_runs": tok_s,
            "ms_per_step": 1000 * statistics.median(r["seconds"] for r in rs) / args.steps,
            "median_step_ms": 1000 * statistics.median(s for r in rs for s in r["step_seconds"]),
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in rs),
            "rss_start_mib": statistics.median(r["rss_start_mib"] for r in rs),
            "tokens_per_run": rs[0]["tokens"],
        }
    speed = rows["chatforge"]["tokens_per_s"] / rows["trl"]["tokens_per_s"]
    memory = rows["chatforge"]["peak_rss_mib"] / rows["trl"]["peak_rss_mib"]
    step_ratio = rows["trl"]["median_step_ms"] / rows["chatforge"]["median_step_ms"]
    supervised = sum(c[1] for c in reference[args.warmup :])

    print(f"\n{rows['chatforge']['tokens_per_run']:,} non-pad tokens ({supervised:,} supervised) in the {args.steps} timed "
          f"steps of every run; same tokens step by step on both sides: {'yes' if same_tokens else 'NO'}")
    print(f"{'side':10s} {'tokens/s':>9s} {'ms/step':>8s} {'median step':>12s} {'peak RSS':>10s} {'RSS at start':>13s}")
    for side in ("chatforge", "trl"):
        r = rows[side]
        print(f"{side:10s} {r['tokens_per_s']:9,.0f} {r['ms_per_step']:8.1f} {r['median_step_ms']:10.1f}ms "
              f"{r['peak_rss_mib']:6,.0f} MiB {r['rss_start_mib']:9,.0f} MiB")
    print(f"chatforge / TRL: tokens/s {speed:.2f}x (target >= 1.5) | median single step {step_ratio:.2f}x | "
          f"peak RSS {memory:.2f}x (target <= 1.0)")
    print(f"|loss chatforge - loss TRL|: {first_diff:.2e} at the first step, {max_diff:.2e} at most over {n} steps")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {k: v for k, v in spec.items() if k not in ("workdir", "model_dir", "train_file", "trl_file")}
        result |= {
            "preset": args.preset, "repeats": args.repeats, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": trl_version[0], "trl_head": args.trl_head, "chatforge_head": args.chatforge_head, "sides": rows, "ratio_tokens_per_s": speed,
            "ratio_median_step": step_ratio, "ratio_peak_rss": memory, "same_tokens": same_tokens,
            "first_loss_diff": first_diff, "max_loss_diff": max_diff,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")

    if not same_tokens:
        print("error: the two sides did not train on the same tokens step by step", file=sys.stderr)
        return 1
    if not first_diff <= FIRST_LOSS_TOLERANCE:
        print(f"error: the first losses differ by {first_diff:.2e} > {FIRST_LOSS_TOLERANCE:.0e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
