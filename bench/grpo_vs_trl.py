"""chatforge GRPO/RLOO vs TRL's `GRPOTrainer`/`RLOOTrainer`: the same tiny model, prompts, group size,
lengths and batch, side by side in one run; prompts/s with generation included, and peak memory.

    bash bench/trl_env.sh                              # once: TRL in its own venv, bench/.venv-trl
    .venv/bin/python bench/grpo_vs_trl.py              # llama-10m, 4 prompts x 4 samples per step, beta 0.04, 3 repeats
    .venv/bin/python bench/grpo_vs_trl.py --beta 0     # no reference model on either side
    .venv/bin/python bench/grpo_vs_trl.py --algos grpo --trl-head plain --json runs/grpo_vs_trl.json

What is compared. Per algorithm (`--algos grpo,rloo`) two sides, each a fresh subprocess that loads the
same saved weights (a chatforge preset built with a fixed seed and a byte-level BPE tokenizer with
chatforge's ChatML template, as bench/sft_vs_trl.py builds them):
  chatforge-grpo  `chatforge.stages.grpo.run` (the `chatforge grpo` stage): `loss.advantage=group`
                  ((r - mean)/std over the group), `loss_aggregation=sequence`, KL to the reference as a
                  loss term (k3, beta = `--beta`);
  trl-grpo        `trl.GRPOTrainer`: `scale_rewards="group"`, `loss_type="grpo"` (each completion's token
                  mean, averaged), `beta` = `--beta` (k3 in the loss);
  chatforge-rloo  the same stage with `loss.advantage=rloo` (r - mean of the group's others) and the KL in
                  the reward (k1 summed over the response, `kl.in_reward=true`), as TRL's RLOO;
  trl-rloo        `trl.RLOOTrainer` (`beta` = `--beta`, KL k1 summed in the reward, no advantage
                  normalisation).
Each optimizer step samples `--prompts` prompts x `--group` completions (TRL: `num_generations`,
`per_device_train_batch_size` = prompts x group, `steps_per_generation=1`; chatforge:
`rollout.prompts_per_rollout`, `samples_per_prompt`, `micro_batch_size` = prompts x group), at most
`--max-new-tokens` new tokens each (TRL: `max_completion_length`), temperature 1.0, no top-k/top-p,
then scores them with the same pure Python reward (`reward_of` below: the digits' share of the
response's characters; the world's arithmetic prompts) and takes one clipped policy-gradient step
(epsilon 0.2, one pass: `num_iterations=1` / `rollout.epochs=1`). With `--beta` > 0 both sides keep a
frozen reference (TRL loads a second copy from the model directory, chatforge copies the policy) and
run it over every rollout; with `--beta 0` neither side loads one nor runs its forward (chatforge:
`kl.coef=0` without adaptive KL). The old policy's forward: GRPO, used on-policy here (one pass, one
optimizer step per rollout), skips it on both sides (TRL takes the detached current log-probs as the old
ones, chatforge's `rollout.old_logprobs=auto` the same); RLOO at `--beta` > 0 needs the policy's
log-probs at rollout time (its KL in the reward): TRL's `RLOOTrainer` runs the forward, chatforge's
`auto` takes the log-probs its sampler recorded while decoding (T = 1, float32: the same numbers,
tests/test_rl_sampler_logprobs.py) and runs none; `--old-logprobs recompute` makes chatforge run it too.
At `--beta 0` chatforge's RLOO needs none while TRL's still runs it.
All: fp32 (`bf16=False`), no gradient checkpointing, fused AdamW (betas 0.9/0.999, eps 1e-8, no weight
decay), constant LR 1e-5, clipping at 1.0, no accumulation, no evaluation, no checkpoint in the timed
steps, no completion logging, metrics logged every step.

Same prompts, same order: chatforge draws its prompts in a seeded order (`PromptStream`); the script
reads that order and hands TRL the prompts in it with `shuffle_dataset=False`, so step k of every side
samples the same prompts (the script checks the prompt token count of every timed step). The samples
themselves differ (each side has its own sampler and RNG); the table prints the generated tokens of
each side's timed steps, which is what the time is spent on. The tiny random model rarely emits a stop
token, so nearly every sample runs to `--max-new-tokens` on both sides (both stop at eos and
`<|im_end|>`).

Timing, memory, repeats as bench/dpo_vs_trl.py: one `perf_counter` stamp per optimizer step (chatforge
in `RolloutBatches.next_batch`, TRL in `TrainerCallback.on_step_begin`), so every step includes its
generation; prompts/s = prompts of the `--steps` steps after `--warmup` / that span. Within the timed
steps the script also sums the time spent generating (chatforge `Sampler.generate`, TRL `_generate`)
and making the rollout (generation + reward + old/reference log-prob forwards: chatforge
`RolloutBatches._new_rollout`, TRL `_generate_and_score_completions`); the rest of a step is the
training forward/backward and the optimizer. Peak memory = the child's `ru_maxrss` (imports included).
CPU seconds per prompt (the child's `process_time` over the timed steps, all threads) are printed
beside prompts/s as a second witness of a load spike, and split by phase (`CpuPhases`: generation, the
reference/old-policy forwards at rollout time, the rest of the rollout, the training forward and loss,
backward, clipping and the optimizer, the rest) in a table of CPU seconds per step. They are not load-free: on the shared 2-core
machine a starved run's CPU time rose too (9.2 against 1.7-3.5 CPU s/prompt: a thread waiting for its
descheduled partner spins on the core), so a run whose CPU s/prompt is far above its side's others was
hit by the load, and neither figure then measures the code.
Repeats alternate the order of the sides; the table gives medians and the ratios chatforge / TRL.
Exit 0 whatever the ratios, 2 without the TRL venv, 1 when the sides did not see the same prompts.
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
LR = 1e-5
CLIP = 0.2
ALGOS = ("grpo", "rloo")
DEFAULT_PROMPTS = common.HERE.parent / "runs" / "continual" / "world" / "verifiable" / "train.jsonl"
TARGET_SPEED, TARGET_RSS = 2.0, 1.0


# ---- the reward: one pure function, called by both sides -------------------------------------------
def reward_of(text: str) -> float:
    """The digits' share of the response's characters (0 for an empty response). Cheap, deterministic,
    and it varies within a group, so the advantages are not all zero."""
    return sum(ch.isdigit() for ch in text) / max(len(text), 1)


def chatforge_reward(prompt, response: str) -> float:
    """chatforge's `function` scorer calls fn(prompt record, response text)."""
    return reward_of(response)


def trl_reward(prompts, completions, **_) -> list[float]:
    """TRL calls reward functions with the batch; conversational completions are message lists."""
    return [reward_of(c[-1]["content"] if isinstance(c, list) else c) for c in completions]


class Timers:
    """Seconds per call of a wrapped method, one list per name (one call per optimizer step here)."""

    def __init__(self):
        self.calls: dict[str, list[float]] = {}

    def wrap(self, owner, name: str, label: str) -> None:
        original = getattr(owner, name)
        calls = self.calls.setdefault(label, [])

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                calls.append(time.perf_counter() - start)

        setattr(owner, name, timed)

    def timed_sums(self, spec: dict) -> dict[str, float]:
        first, last = spec["warmup"], spec["warmup"] + spec["steps"]
        return {f"{label}_seconds": sum(calls[first:last]) for label, calls in self.calls.items()}


PHASES = (  # (key, what it is) in the order of a step; CpuPhases.per_step derives the exclusive parts
    ("generation", "sampling"),
    ("scoring_forwards", "reference (and old-policy) log-prob forwards at rollout time"),
    ("rollout_rest", "reward, padding, advantages"),
    ("train_forward", "training forward and loss"),
    ("backward", "backward"),
    ("optimizer", "gradient clipping and the optimizer step"),
    ("other", "the rest of the step"),
)


class CpuPhases:
    """CPU seconds (`process_time`, this process's threads) per phase of the timed steps, per step. Every
    wrapped call is recorded with its start; those starting inside the clock's timed window are summed.
    `inside` counts a call only while another wrapped method runs (TRL's log-prob forwards at rollout time,
    not the training forward, which goes through the same method)."""

    def __init__(self):
        self.events: list[tuple[str, float, float]] = []
        self.active: list[str] = []

    def wrap(self, owner, name: str, label: str, inside: str | None = None) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            if inside is not None and inside not in self.active:
                return original(*args, **kwargs)
            self.active.append(label)
            start = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.active.pop()
                self.events.append((label, start, time.process_time() - start))

        setattr(owner, name, timed)

    def hook_backward_and_optimizer(self) -> None:
        """`Tensor.backward`, `clip_grad_norm_` and every optimizer's step (torch's global step hooks)."""
        import torch
        import torch.optim.optimizer as optimizer_module

        self.wrap(torch.Tensor, "backward", "backward")
        self.wrap(torch.nn.utils, "clip_grad_norm_", "clip")
        started: list[float] = []
        optimizer_module.register_optimizer_step_pre_hook(lambda *_: started.append(time.process_time()))
        optimizer_module.register_optimizer_step_post_hook(
            lambda *_: self.events.append(("optimizer_step", started[-1], time.process_time() - started[-1])))

    def per_step(self, clock: common.StepClock, spec: dict) -> dict[str, float]:
        first, last = spec["warmup"], spec["warmup"] + spec["steps"]
        low, high = clock.cpu_stamps[first], clock.cpu_stamps[last]
        sums: dict[str, float] = {}
        for label, start, seconds in self.events:
            if low <= start < high:
                sums[label] = sums.get(label, 0.0) + seconds / spec["steps"]
        get = lambda k: sums.get(k, 0.0)  # noqa: E731
        out = {
            "generation": get("generate"), "scoring_forwards": get("scoring"),
            "rollout_rest": get("rollout") - get("generate") - get("scoring"), "train_forward": get("train_forward"),
            "backward": get("backward"), "optimizer": get("clip") + get("optimizer_step"),
        }
        out["other"] = (high - low) / spec["steps"] - sum(out.values())
        return out


# ---- chatforge, in its own process ----------------------------------------------------------------
def chatforge_config(spec: dict, algo: str, out: Path):
    from chatforge.stages import grpo

    rows = spec["prompts_per_step"] * spec["group"]
    rloo = algo == "rloo"
    return grpo.Config.model_validate({
        "out": str(out), "model": spec["model_dir"],
        "data": {"sources": [{"path": str(spec["prompts_file"])}]},
        "rollout": {"prompts_per_rollout": spec["prompts_per_step"], "samples_per_prompt": spec["group"], "epochs": 1,
                    "forward_batch_size": rows,  # TRL scores the whole generation batch in one forward
                    "old_logprobs": spec.get("old_logprobs", "auto"),
                    "sampling": {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": spec["max_new_tokens"],
                                 "seed": spec["seed"]}},
        "reward": {"scorer": {"kind": "function", "path": "grpo_vs_trl:chatforge_reward"}, "gold": None},
        "kl": {"coef": spec["beta"], "estimator": "k1" if rloo else "k3", "in_reward": rloo},
        "loss": {"advantage": "rloo" if rloo else "group", "loss_aggregation": "sequence", "clip": CLIP},
        "diagnostics": {"samples_every": 0},
        "train": {"max_steps": spec["warmup"] + spec["steps"] + 1, "micro_batch_size": rows, "grad_accum_steps": 1,
                  "seed": spec["seed"], "precision": "fp32", "device": "cpu", "log_every": 1, "eval_every": 0,
                  "save_every": 0, "resume": "never", "progress": False},
        "optim": {"lr": LR, "weight_decay": 0.0, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "max_grad_norm": 1.0,
                  "implementation": "fused"},
        "schedule": {"kind": "constant", "warmup_steps": 0},
    })


def child_chatforge(spec: dict, algo: str) -> dict:
    import torch

    import chatforge.sampling.sampler as sampler_module
    from chatforge.engine.log import read_metrics
    from chatforge.rl.objectives import PolicyGradientObjective
    from chatforge.rl.rollout import RolloutBatches
    from chatforge.stages import grpo

    clock, timers = common.StepClock(), Timers()
    original_next = RolloutBatches.next_batch

    def next_batch(self):
        clock.stamp()
        batch = original_next(self)
        mask = batch["attention_mask"]
        generated = int(batch["action_mask"].sum())
        clock.counts.append([int(mask.sum()) - generated, generated])
        return batch

    RolloutBatches.next_batch = next_batch
    timers.wrap(sampler_module.Sampler, "generate", "generate")
    timers.wrap(RolloutBatches, "_new_rollout", "rollout")
    phases = CpuPhases()
    phases.wrap(sampler_module.Sampler, "generate", "generate")
    phases.wrap(RolloutBatches, "_new_rollout", "rollout")
    phases.wrap(RolloutBatches, "_score_tokens", "scoring")
    phases.wrap(PolicyGradientObjective, "__call__", "train_forward")
    phases.hook_backward_and_optimizer()
    out = Path(spec["workdir"]) / f"chatforge-{algo}-{time.time_ns()}"
    cfg = chatforge_config(spec, algo, out)
    torch.manual_seed(spec["seed"])
    clock.rss_start = common.rss_now_mib()
    if spec.get("profile"):
        common.profiled(lambda: grpo.run(cfg), Path(spec["workdir"]) / f"profile-chatforge-{algo}.txt")
    else:
        grpo.run(cfg)
    for row in read_metrics(out / "metrics.jsonl"):
        if "loss" in row:
            clock.logs.append({k: row[k] for k in ("loss", "reward/proxy", "response_length") if k in row})
    clock.extra.update(timers.timed_sums(spec))
    clock.extra["cpu_phases"] = phases.per_step(clock, spec)
    return clock.result(spec)


# ---- TRL, in its own process and venv -------------------------------------------------------------
def child_trl(spec: dict, algo: str) -> dict:
    import datasets
    import torch
    import transformers
    from transformers import AutoTokenizer, TrainerCallback

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    clock, timers = common.StepClock(), Timers()

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            clock.stamp()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                clock.logs.append({k: float(logs[k]) for k in ("loss", "reward", "completions/mean_length") if k in logs})

    rows = spec["prompts_per_step"] * spec["group"]
    common_args = dict(
        output_dir=str(Path(spec["workdir"]) / f"trl-{algo}-{time.time_ns()}"), max_steps=spec["warmup"] + spec["steps"] + 1,
        per_device_train_batch_size=rows, gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1,
        num_generations=spec["group"], max_completion_length=spec["max_new_tokens"], temperature=1.0, top_p=1.0, top_k=0,
        beta=spec["beta"], epsilon=CLIP, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch_fused", adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, weight_decay=0.0, max_grad_norm=1.0,
        bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, seed=spec["seed"], shuffle_dataset=False,
        eval_strategy="no", save_strategy="no", logging_steps=1, report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, log_completions=False, model_init_kwargs={"dtype": "float32"},
    )
    if algo == "grpo":
        import trl.trainer.grpo_trainer as module
        from trl import GRPOConfig as TrainerConfig
        from trl import GRPOTrainer as Trainer

        args = TrainerConfig(**common_args, loss_type="grpo", scale_rewards="group")
    else:
        import trl.trainer.rloo_trainer as module
        from trl import RLOOConfig as TrainerConfig
        from trl import RLOOTrainer as Trainer

        args = TrainerConfig(**common_args, normalize_advantages=False)
    if spec["trl_head"] == "plain":
        module.add_fused_lm_head = common.add_plain_lm_head

    class BenchTrainer(Trainer):
        def compute_loss(self, model, inputs, *a, **kw):
            if model.training:
                clock.counts.append([int(inputs["prompt_mask"].sum()), int(inputs["completion_mask"].sum())])
            return super().compute_loss(model, inputs, *a, **kw)

    phases = CpuPhases()  # on TRL's class first: the wall-clock timers below set BenchTrainer's own attributes
    phases.wrap(Trainer, "_generate", "generate")
    phases.wrap(Trainer, "_generate_and_score_completions", "rollout")
    phases.wrap(Trainer, "_get_per_token_logps_and_entropies", "scoring", inside="rollout")
    phases.wrap(Trainer, "compute_loss", "train_forward")
    phases.hook_backward_and_optimizer()
    timers.wrap(BenchTrainer, "_generate", "generate")
    timers.wrap(BenchTrainer, "_generate_and_score_completions", "rollout")
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    dataset = datasets.load_dataset("json", data_files=spec["trl_file"], split="train")
    torch.manual_seed(spec["seed"])
    clock.rss_start = common.rss_now_mib()  # before the trainer loads the policy and its reference
    trainer = BenchTrainer(model=spec["model_dir"], reward_funcs=trl_reward, args=args, train_dataset=dataset,
                           processing_class=tokenizer, callbacks=[Clock()])
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
    if spec.get("profile"):
        common.profiled(trainer.train, Path(spec["workdir"]) / f"profile-trl-{algo}.txt")
    else:
        trainer.train()
    clock.extra.update(timers.timed_sums(spec))
    clock.extra["cpu_phases"] = phases.per_step(clock, spec)
    return clock.result(spec)


# ---- the parent ------------------------------------------------------------------------------------
def prompts_file(args: argparse.Namespace, workdir: Path) -> Path:
    """`--prompts`, or the verifiable prompts of a small task world written to `workdir` when missing."""
    return common.world_file(args.prompts, workdir, "verifiable/train.jsonl", "verifiable prompts")


def prepare(args: argparse.Namespace, workdir: Path) -> dict:
    """Model, tokenizer, the prompts both sides read, and the TRL data file in chatforge's prompt order."""
    from chatforge.data.prompts import load_prompts
    from chatforge.models.build import count_parameters
    from chatforge.rl.rollout import PromptStream
    from chatforge.run_dir import RejectLog
    from chatforge.sampling.sampler import chat_prompt
    from chatforge.sft.masking import end_of_turn_ids

    model_dir = workdir / "model"
    tokenizer, model = common.build_tiny_model(args, model_dir)
    # both samplers stop at eos and <|im_end|>: chatforge's default; TRL reads the model's generation config
    stops = [tokenizer.eos_token_id, *end_of_turn_ids(tokenizer)]
    model.generation_config.eos_token_id = sorted(set(stops))
    model.save_pretrained(model_dir)
    records = load_prompts(str(prompts_file(args, workdir)), None, RejectLog(None), [args.task] if args.task else None)
    chosen = workdir / "prompts.jsonl"
    chosen.write_text("".join(json.dumps({"id": r["id"], "prompt": r["prompt"]}) + "\n" for r in records), encoding="utf-8")
    steps = args.warmup + args.steps + 1
    order = PromptStream(len(records), args.seed).take(steps * args.per_step)
    trl_file = workdir / "trl_prompts.jsonl"
    trl_file.write_text("".join(json.dumps({"prompt": records[i]["prompt"]}) + "\n" for i in order), encoding="utf-8")
    lengths = [len(chat_prompt(tokenizer, records[i]["prompt"])) for i in order]
    return {
        "workdir": str(workdir), "model_dir": str(model_dir), "prompts_file": str(chosen), "trl_file": str(trl_file),
        "prompts_per_step": args.per_step, "group": args.group, "max_new_tokens": args.max_new_tokens, "beta": args.beta,
        "steps": args.steps, "warmup": args.warmup, "seed": args.seed, "trl_head": args.trl_head, "profile": args.profile,
        "old_logprobs": args.old_logprobs,
        "parameters": count_parameters(model), "vocab": len(tokenizer), "prompt_records": len(records),
        "mean_prompt_tokens": sum(lengths) / len(lengths), "stop_token_ids": sorted(set(stops)),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="llama-10m", help="chatforge model preset (llama-1m, llama-10m, ...)")
    p.add_argument("--vocab-size", type=int, default=8192, help="vocabulary of the tokenizer trained for the run")
    p.add_argument("--tokenizer-documents", type=int, default=2000, help="documents the tokenizer is trained on")
    p.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS,
                   help="prompt records (world layout); default: the task world's verifiable training prompts under "
                        "runs/continual (a small world is written when missing)")
    p.add_argument("--task", default="arithmetic", help="keep the prompts of this task only ('' = all)")
    p.add_argument("--algos", default=",".join(ALGOS), help="comma-separated subset of grpo,rloo")
    p.add_argument("--prompts-per-step", dest="per_step", type=int, default=4, help="prompts per optimizer step (both sides)")
    p.add_argument("--group", type=int, default=4, help="completions per prompt (TRL num_generations)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="new tokens per completion at most (TRL max_completion_length)")
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient on both sides; 0 = no reference model")
    p.add_argument("--steps", type=int, default=4, help="timed optimizer steps per run")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps at the start of every run")
    p.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating their order")
    p.add_argument("--seed", type=int, default=1234, help="seed for the weights, the prompt order and sampling")
    p.add_argument("--trl-head", choices=("fused", "plain"), default="fused",
                   help="fused: TRL as shipped (its chunked log-prob LM head; a torch fallback on CPU); plain: full logits")
    p.add_argument("--old-logprobs", choices=("auto", "sampler", "recompute"), default="auto",
                   help="chatforge's rollout.old_logprobs (recompute: run the old-policy forward as TRL's RLOO does)")
    p.add_argument("--trl-python", default=str(common.DEFAULT_TRL_PYTHON), help="python of the TRL venv (bench/trl_env.sh)")
    p.add_argument("--profile", action="store_true",
                   help="cProfile every child; the top of each profile is printed (timings are then not comparable)")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("vocab_size", "per_step", "max_new_tokens", "steps", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-').replace('per-step', 'prompts-per-step')} must be >= 1")
    if args.group < 2:
        p.error("--group must be >= 2 (a group-relative advantage needs two samples)")
    if args.warmup < 0 or args.beta < 0:
        p.error("--warmup and --beta must be >= 0")
    args.algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    if not args.algos or any(a not in ALGOS for a in args.algos):
        p.error(f"--algos: choose from {', '.join(ALGOS)}")
    return args


def summarize(args, spec: dict, runs: dict[str, list[dict]]) -> tuple[dict, dict]:
    prompts_timed = args.steps * args.per_step
    rows = {}
    for side, rs in runs.items():
        pps = [prompts_timed / r["seconds"] for r in rs]
        generated = [sum(c[1] for c in r["counts"][args.warmup:]) for r in rs]
        rows[side] = {
            "prompts_per_s": common.median(pps), "prompts_per_s_runs": pps,
            "cpu_s_per_prompt": common.median(r["cpu_seconds"] / prompts_timed for r in rs),
            "cpu_s_per_prompt_runs": [r["cpu_seconds"] / prompts_timed for r in rs],
            "ms_per_step": 1000 * common.median(r["seconds"] for r in rs) / args.steps,
            "generate_share": common.median(r.get("generate_seconds", 0.0) / r["seconds"] for r in rs),
            "rollout_share": common.median(r.get("rollout_seconds", 0.0) / r["seconds"] for r in rs),
            "generated_tokens": common.median(generated),
            "generated_tokens_per_s": common.median(g / r["seconds"] for g, r in zip(generated, rs)),
            "peak_rss_mib": common.median(r["peak_rss_mib"] for r in rs), "peak_rss_mib_runs": [r["peak_rss_mib"] for r in rs],
            "rss_start_mib": common.median(r["rss_start_mib"] for r in rs),
            "cpu_phases": {key: common.median(r["cpu_phases"][key] for r in rs) for key, _ in PHASES},
        }
    ratios = {}
    for algo in args.algos:
        a, b = rows.get(f"chatforge-{algo}"), rows.get(f"trl-{algo}")
        if a and b:
            paired = [x / y for x, y in zip(a["prompts_per_s_runs"], b["prompts_per_s_runs"])]
            ratios[algo] = {
                "prompts_per_s": a["prompts_per_s"] / b["prompts_per_s"], "paired_runs": paired,
                "paired_median": common.median(paired), "peak_rss": a["peak_rss_mib"] / b["peak_rss_mib"],
                # TRL's CPU seconds per prompt / chatforge's: > 1 = chatforge spends less CPU per prompt
                "cpu_per_prompt": b["cpu_s_per_prompt"] / a["cpu_s_per_prompt"],
            }
    return rows, ratios


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.spec.read_text())
        lib, algo = args.child.split("-")
        result = (child_chatforge if lib == "chatforge" else child_trl)(spec, algo)
        args.result.write_text(json.dumps(result))
        return 0

    problem = common.check_trl_env(args.trl_python)
    if problem:
        print(common.missing_trl_message(problem), file=sys.stderr)
        return 2
    trl_version, trl_transformers = common.trl_versions(args.trl_python)
    import torch
    import transformers

    sides = [f"{lib}-{algo}" for algo in args.algos for lib in ("chatforge", "trl")]
    load_before = common.load_average()
    with tempfile.TemporaryDirectory(prefix="bench-grpo-trl-") as tmp:
        workdir = Path(tmp)
        spec = prepare(args, workdir)
        spec_path = workdir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        print(
            f"{args.preset}: {spec['parameters'] / 1e6:.2f}M parameters, vocab {spec['vocab']} | {spec['prompt_records']} "
            f"{args.task or 'verifiable'} prompts, {spec['mean_prompt_tokens']:.0f} tokens on average | {args.per_step} prompts x "
            f"{args.group} samples per step, <= {args.max_new_tokens} new tokens, T=1.0, beta {args.beta:g}, 1 iteration, "
            f"chatforge old log-probs {args.old_logprobs}, "
            f"LR {LR:g} | {args.steps} timed + {args.warmup} warm-up steps, {args.repeats} repeats | cpu "
            f"({torch.get_num_threads()} threads), fp32, AdamW fused | torch {torch.__version__}, transformers "
            f"{transformers.__version__} | TRL {trl_version} (transformers {trl_transformers}), {args.trl_head} LM head "
            f"| load average {load_before}",
            flush=True,
        )
        pythons = {s: (sys.executable if s.startswith("chatforge") else args.trl_python) for s in sides}

        def describe(side, r):
            generated = sum(c[1] for c in r["counts"][args.warmup:])
            return (f"{args.steps * args.per_step / r['seconds']:6.2f} prompts/s  "
                    f"{r['cpu_seconds'] / (args.steps * args.per_step):5.2f} CPU s/prompt  {generated:5d} generated tokens  "
                    f"generation {r.get('generate_seconds', 0.0) / r['seconds']:4.0%} of the time  "
                    f"peak RSS {r['peak_rss_mib']:7,.0f} MiB  (load {common.load_average()})")

        runs = common.alternating_runs(SCRIPT, sides, pythons, spec_path, workdir, args.repeats, describe)
        if args.profile:
            for path in sorted(workdir.glob("profile-*.txt")):
                print(f"\n==== {path.name} ====\n" + "\n".join(path.read_text().splitlines()[:90]))
    load_after = common.load_average()

    # Same prompts: the prompt tokens of every step agree on every side and run.
    prompt_tokens = [[c[0] for c in r["counts"]] for rs in runs.values() for r in rs]
    same_prompts = all(p == prompt_tokens[0] for p in prompt_tokens)
    rows, ratios = summarize(args, spec, runs)
    print(f"\n{args.steps * args.per_step} prompts ({args.steps * args.per_step * args.group} completions) in the {args.steps} timed "
          f"steps of every run; same prompt tokens step by step on all sides: {'yes' if same_prompts else 'NO'}")
    print(f"{'side':15s} {'prompts/s':>9s} {'CPU s/prompt':>12s} {'ms/step':>8s} {'gen tokens':>10s} {'gen tok/s':>9s} "
          f"{'generation':>10s} {'rollout':>8s} {'peak RSS':>10s} {'RSS at start':>13s}")
    for side, r in rows.items():
        print(f"{side:15s} {r['prompts_per_s']:9.2f} {r['cpu_s_per_prompt']:12.2f} {r['ms_per_step']:8.0f} {r['generated_tokens']:10,.0f} "
              f"{r['generated_tokens_per_s']:9.0f} {r['generate_share']:10.0%} {r['rollout_share']:8.0%} "
              f"{r['peak_rss_mib']:6,.0f} MiB {r['rss_start_mib']:9,.0f} MiB")
    print("(generation: share of the timed span spent sampling; rollout: sampling + reward + old/reference forwards; "
          "the rest is the training forward/backward and the optimizer)")
    print("\nCPU seconds per step by phase (medians over the repeats):")
    print(f"{'side':15s} " + " ".join(f"{key:>16s}" for key, _ in PHASES) + f" {'total':>8s}")
    for side, r in rows.items():
        cpu = r["cpu_phases"]
        print(f"{side:15s} " + " ".join(f"{cpu[key]:16.3f}" for key, _ in PHASES) + f" {sum(cpu.values()):8.3f}")
    print("(" + "; ".join(f"{key}: {what}" for key, what in PHASES) + ")")
    for algo, ratio in ratios.items():
        print(f"chatforge-{algo} / trl-{algo}: prompts/s {ratio['prompts_per_s']:.2f}x (target >= {TARGET_SPEED:g}; per repeat "
              + ", ".join(f"{x:.2f}" for x in ratio["paired_runs"])
              + f") | CPU s/prompt TRL / chatforge {ratio['cpu_per_prompt']:.2f}x | peak RSS {ratio['peak_rss']:.2f}x (target <= {TARGET_RSS:g})")
    print(f"load average (1, 5, 15 min): {load_before} before, {load_after} after")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {k: v for k, v in spec.items() if k not in ("workdir", "model_dir", "trl_file", "prompts_file", "profile")}
        result |= {
            "preset": args.preset, "repeats": args.repeats, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": trl_version, "lr": LR, "sides": rows, "ratios": ratios,
            "same_prompts": same_prompts, "first_logs": {s: rs[0]["logs"][:2] for s, rs in runs.items()},
            "load_before": load_before, "load_after": load_after,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if not same_prompts:
        print("error: the sides did not sample the same prompts step by step", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
