"""Self-training on the model's own verified samples: ReST-EM, or Llama 2's rejection-sampling fine-tuning.

Each iteration i = 1..`iterations`:

1. **E-step** (generate): `e_step.samples_per_prompt` samples per training prompt from the current
   policy (iteration 1: `model`), scored by `e_step.scorer` (any `chatforge.scoring` scorer; default
   `check`, the task world's binary checker; `gold` is its gold reward in [-1, 1], `reward_model` a
   trained reward model).
   - `method: rest_em` keeps the distinct samples with reward >= `e_step.threshold` (1 = correct), at
     most `e_step.cap_per_prompt` per prompt (Singh et al. 2023, arXiv 2312.06585), from this
     iteration's samples only.
   - `method: rejection_sampling` keeps each prompt's best sample, and trains on the pool of the
     best samples of all iterations so far (Llama 2 §3.2.3), per prompt the best of every round.
2. **M-step** (improve): `chatforge sft` on the kept set, starting from the **base model** `model`
   (`m_step.init: base`, ReST-EM's choice against task-specific over-fitting and drift) or from the
   previous policy (`previous`), for `m_step.epochs` passes over it. Its `final/` is the new policy.
3. **Evaluation** of the new policy on `eval.max_train_prompts` training prompts and on the held-out
   prompts: greedy accuracy, pass@k for every k in `eval.ks` (unbiased estimator over `eval.n`
   samples), maj@n (majority vote), overall, per task and, for arithmetic prompts, per operator; the
   train-test gap is the over-fitting the ReST-EM paper reports after a few iterations.

`data.sources` are the training prompts (sampled in the E-step), `data.val_sources` the held-out ones
(evaluation only), as sft, rm and dpo name their data; `data.tasks` (e.g. `[arithmetic]`) keeps only
the prompts of those tasks, train and held out.

Iteration 0 evaluates `model` itself. The last policy is `OUT/final/` (as every training stage leaves
its model; its files are hard links into the last M-step's `final/`). Every iteration's files are kept under `OUT/iter_<i>/`
(`samples.jsonl` with every sample and its reward, `kept.jsonl` the fine-tuning set in messages
format, `sft/` the M-step run, `eval.json`); a rerun skips what is finished. `OUT/report/summary.json`
and `rest.png` hold the per-iteration table.

    chatforge rest model=runs/sft/world_full/final data.sources=world/verifiable/train.jsonl \\
        data.val_sources=world/verifiable/test.jsonl iterations=3
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.data.prompts import PromptSources, load_prompts
from chatforge.data.safe_json import jsonl_lines
from chatforge.engine.config import OptimConfig
from chatforge.errors import ChatforgeError, ConfigError
from chatforge.run_dir import RejectLog, RunDir
from chatforge.sampling.config import SamplingConfig
from chatforge.scoring.config import CheckScorerConfig, ScorerConfig


def _sampling(**kw) -> SamplingConfig:
    return SamplingConfig(**({"temperature": 1.0, "max_new_tokens": 128, "seed": 0} | kw))


class EStepConfig(StrictModel):
    samples_per_prompt: int = Field(16, ge=1, description="samples drawn per training prompt")
    sampling: SamplingConfig = Field(default_factory=_sampling, description="sampler settings (n is samples_per_prompt)")
    scorer: ScorerConfig = Field(
        default_factory=CheckScorerConfig,
        description="what scores a sample (chatforge.scoring): check (binary, ReST-EM), gold, function, reward_model, combined",
    )
    threshold: float = Field(1.0, description="rest_em: keep samples with reward >= threshold")
    cap_per_prompt: int | None = Field(10, ge=1, description="rest_em: at most this many kept samples per prompt")
    min_reward: float | None = Field(None, description="rejection_sampling: a prompt's best must reach this to be kept")


class MStepConfig(StrictModel):
    init: Literal["base", "previous"] = Field("base", description="fine-tune the base model (ReST-EM) or the last policy")
    epochs: float = Field(2.0, gt=0, description="passes over the kept set")
    max_steps: int | None = Field(None, ge=1, description="cap on optimizer steps per M-step")
    micro_batch_size: int = Field(16, ge=1, description="conversations per micro-batch (one per row)")
    seq_len: int = Field(384, ge=16, description="longest conversation in tokens")
    mode: Literal["full", "lora"] = Field("full", description="full fine-tuning or LoRA (sft's lora defaults)")
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=0.0))


class RestEvalConfig(StrictModel):
    n: int = Field(8, ge=1, description="samples per prompt for pass@k and majority vote")
    ks: list[int] = Field(default_factory=lambda: [1, 4, 8], description="k values of pass@k (k <= n)")
    sampling: SamplingConfig = Field(default_factory=lambda: _sampling(seed=1), description="sampler settings (n is eval.n)")
    greedy: bool = Field(True, description="also report greedy (temperature 0) accuracy")
    max_train_prompts: int | None = Field(100, ge=1, description="training prompts evaluated (the train side of the gap)")
    max_test_prompts: int | None = Field(None, ge=1, description="held-out prompts evaluated (None: all)")


class RestDataConfig(StrictModel):
    """The prompts: `sources` sampled and trained on, `val_sources` held out (the keys of sft, rm and dpo)."""

    sources: PromptSources = Field(
        min_length=1, description="training prompts: [{path, split}] or one path; world verifiable records: prompt, task, answer (required)"
    )
    val_sources: PromptSources = Field(min_length=1, description="held-out prompts, same layout (required)")
    max_prompts: int | None = Field(None, ge=1, description="use the first N training prompts")
    tasks: list[str] | None = Field(
        None, min_length=1, description="keep only prompts whose `task` is one of these (e.g. [arithmetic]), train and test; None: all"
    )


class Config(StrictModel):
    # the keys before data.sources / data.val_sources; a config that still uses them is told the new ones
    renamed_keys: ClassVar[dict[str, str]] = {
        "train_prompts": "data.sources", "test_prompts": "data.val_sources", "max_train_prompts": "data.max_prompts", "tasks": "data.tasks",
    }

    out: str = Field("runs/rest", description="run directory")
    model: str = Field(description="the base policy: a Hugging Face causal-LM directory with a chat template (required)")
    tokenizer: str | None = Field(None, description="tokenizer directory; default: the model directory")
    method: Literal["rest_em", "rejection_sampling"] = Field("rest_em", description="what the E-step keeps")
    data: RestDataConfig
    iterations: int = Field(3, ge=1, description="E-step + M-step rounds")
    e_step: EStepConfig = Field(default_factory=EStepConfig)
    m_step: MStepConfig = Field(default_factory=MStepConfig)
    eval: RestEvalConfig = Field(default_factory=RestEvalConfig)
    seed: int = Field(0, description="seed of the cap's random choice and of the M-step's data order")


def correct(record: dict, response: str) -> bool:
    """Binary correctness for pass@k and majority vote: the world's checker (verifiable records with
    `task`/`answer`, else the instruction checker on the prompt)."""
    from chatforge.scoring.world import world_correct

    return world_correct(record, response)


class Policy:
    """A model directory loaded for sampling."""

    def __init__(self, path: str, tokenizer_path: str | None):
        import torch
        from transformers import AutoModelForCausalLM

        from chatforge.sampling.sampler import Sampler
        from chatforge.tokenizer.load import load_tokenizer

        self.path = path
        self.tokenizer = load_tokenizer(tokenizer_path or path)
        if not self.tokenizer.chat_template:
            raise ConfigError(f"{tokenizer_path or path}: the tokenizer has no chat template (use an SFT model)")
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False, dtype=torch.float32)
        self.sampler = Sampler(model, self.tokenizer, model_path=path)

    def sample(self, records: list[dict], sampling: SamplingConfig, n: int) -> list[list[str]]:
        from chatforge.sampling.sampler import chat_prompt

        prompts = [chat_prompt(self.tokenizer, r["prompt"]) for r in records]
        out = self.sampler.generate(prompts, sampling.model_copy(update={"n": n}))
        return [[c.text for c in completions] for completions in out]


def evaluate_policy(policy: Policy, train: list[dict], test: list[dict], cfg: RestEvalConfig) -> dict:
    from chatforge.evaluation.sampled import sampled_metrics

    ks = [k for k in cfg.ks if k <= cfg.n]
    result = {}
    for split, records in (("train", train), ("test", test)):
        samples = policy.sample(records, cfg.sampling, cfg.n)
        greedy = None
        if cfg.greedy:
            greedy = [s[0] for s in policy.sample(records, cfg.sampling.model_copy(update={"temperature": 0.0}), 1)]
        metrics = sampled_metrics(records, samples, correct, ks, greedy)
        # Per prompt, in the records' order, so that two policies' gains are paired over the same prompts.
        metrics["per_prompt"] = [{k: v for k, v in row.items() if k not in ("n", "correct")} for row in metrics["per_prompt"]]
        arithmetic = [(i, op) for i, op in enumerate(map(arithmetic_operator, records)) if op is not None]
        if arithmetic:  # arithmetic prompts again, grouped by operator (+, -, *)
            by_op = sampled_metrics(
                [{**records[i], "operator": op} for i, op in arithmetic], [samples[i] for i, _ in arithmetic], correct, ks,
                None if greedy is None else [greedy[i] for i, _ in arithmetic], group_field="operator",
            )
            metrics["by_operator"] = by_op["by_group"]
        result[split] = metrics
    return result


def arithmetic_operator(record: dict) -> str | None:
    """The canonical operator ("+", "-", "*") of an arithmetic prompt, read from its last user turn."""
    from chatforge.world.prompts import canonical_op, read_question

    if record.get("task") != "arithmetic":
        return None
    question = read_question(record["prompt"][-1]["content"])
    if question is None or question.task != "arithmetic":
        return None
    return canonical_op(question.fields["op"])


def run(cfg: Config) -> dict:
    from chatforge.selftrain.select import Scored, best_per_prompt, keep_correct, merge_best

    if any(k > cfg.eval.n for k in cfg.eval.ks):
        raise ConfigError(f"eval.ks {cfg.eval.ks} has a k above eval.n={cfg.eval.n}")
    run_dir = RunDir.create(cfg.out)
    run_dir.write_config(cfg)
    from chatforge.scoring import build_scorer

    scorer = build_scorer(cfg.e_step.scorer)
    with RejectLog(run_dir.rejected) as rejects:
        train = load_prompts(cfg.data.sources, cfg.data.max_prompts, rejects, cfg.data.tasks)
        test = load_prompts(cfg.data.val_sources, cfg.eval.max_test_prompts, rejects, cfg.data.tasks)
    train_eval = train[: cfg.eval.max_train_prompts]
    print(
        f"{cfg.method}: {len(train)} training prompts, {len(test)} held-out"
        + (f" (tasks {', '.join(cfg.data.tasks)})" if cfg.data.tasks else "")
        + f" | {cfg.iterations} iterations x "
        f"{cfg.e_step.samples_per_prompt} samples per prompt | M-step from {cfg.m_step.init}"
    )
    rows: list[dict] = []
    pool: dict[str, Scored] = {}
    policy_dir = cfg.model
    for iteration in range(cfg.iterations + 1):
        it_dir = Path(cfg.out) / f"iter_{iteration}"
        it_dir.mkdir(parents=True, exist_ok=True)
        row: dict = {"iteration": iteration, "policy": policy_dir}
        if iteration > 0:
            samples_path = it_dir / "samples.jsonl"
            scored = _e_step(cfg, policy_dir, train, scorer, samples_path, iteration)
            if cfg.method == "rest_em":
                kept = keep_correct(scored, cfg.e_step.cap_per_prompt, cfg.seed + iteration, cfg.e_step.threshold)
            else:
                pool = merge_best(pool, best_per_prompt(scored, cfg.e_step.min_reward))
                kept = list(pool.values())
            row["e_step"] = {
                "samples": len(scored),
                "mean_reward": sum(s.reward for s in scored) / len(scored),
                "prompts_solved": len({s.prompt_id for s in scored if s.reward >= cfg.e_step.threshold}),
                "kept": len(kept),
                "kept_prompts": len({s.prompt_id for s in kept}),
            }
            print(f"iteration {iteration} E-step: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row["e_step"].items()))
            if not kept:
                print(f"iteration {iteration}: nothing to keep (no sample reached the threshold); stopping")
                rows.append(row)
                break
            by_id = {r["id"]: r for r in train}
            kept_path = it_dir / "kept.jsonl"
            with kept_path.open("w", encoding="utf-8") as fh:
                for s in kept:
                    messages = [*by_id[s.prompt_id]["prompt"], {"role": "assistant", "content": s.response}]
                    fh.write(json.dumps({"id": s.prompt_id, "task": by_id[s.prompt_id].get("task"), "messages": messages, "round": s.round}, ensure_ascii=False) + "\n")
            init = cfg.model if cfg.m_step.init == "base" else policy_dir
            policy_dir = _m_step(cfg, init, kept_path, len(kept), it_dir / "sft", iteration)
            row["policy"] = policy_dir
        row["eval"] = _evaluate(cfg, policy_dir, train_eval, test, it_dir / "eval.json")
        if rows and "eval" in rows[0]:
            row["gain_over_base"] = gains_over(rows[0]["eval"]["test"], row["eval"]["test"], _columns(cfg))
        rows.append(row)
        print(format_row(row, cfg))
    _write_final(cfg, policy_dir, run_dir.final)
    summary = {"method": cfg.method, "final": str(run_dir.final), "final_policy": policy_dir, "iterations": rows}
    run_dir.write_summary(summary)
    print(format_table(rows, cfg))
    print(format_task_table(rows, cfg))
    if any("by_operator" in r.get("eval", {}).get("test", {}) for r in rows):
        print(format_task_table(rows, cfg, group="by_operator"))
    _plot(rows, cfg, run_dir.report / "rest.png")
    print(f"done: {run_dir.final} (the policy of {policy_dir}) | table in {run_dir.summary}, plot {run_dir.report / 'rest.png'}")
    return summary


def _write_final(cfg: Config, policy_dir: str, final: Path) -> None:
    """OUT/final/: the last policy, where every training stage leaves its model (a recipe's `${rest.final}`).

    Its files are hard links to the policy's (no second copy of the weights; a copy where the
    filesystem cannot link), written through `atomic_dir`: a kill leaves the previous final/ or none.
    Every writer replaces a directory rather than a file in it, so a linked file never changes."""
    import os
    import shutil

    from chatforge.atomic_dir import MARKER, atomic_dir, check_complete

    source = Path(policy_dir)
    check_complete(source)
    with atomic_dir(final) as tmp:
        for file in sorted(source.rglob("*")):
            name = file.relative_to(source)
            if not file.is_file() or name == Path(MARKER):  # atomic_dir writes final/'s own marker
                continue
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(file, tmp / name)
            except OSError:
                shutil.copy2(file, tmp / name)
        if policy_dir == cfg.model and cfg.tokenizer:  # the base model, whose tokenizer is elsewhere
            from chatforge.tokenizer.load import load_tokenizer

            load_tokenizer(cfg.tokenizer).save_pretrained(tmp)


def _e_step(cfg: Config, policy_dir: str, train: list[dict], scorer, path: Path, iteration: int):
    from chatforge.selftrain.select import Scored

    if path.is_file():  # a finished E-step of a resumed run
        rows = [json.loads(line) for _, line in jsonl_lines(path.read_text(encoding="utf-8"))]
        return [Scored(r["id"], r["response"], r["reward"], iteration) for r in rows]
    policy = Policy(policy_dir, cfg.tokenizer if policy_dir == cfg.model else None)
    sampling = cfg.e_step.sampling.model_copy(update={"seed": (cfg.e_step.sampling.seed or 0) + iteration})
    samples = policy.sample(train, sampling, cfg.e_step.samples_per_prompt)
    pairs = [(r, text) for r, texts in zip(train, samples) for text in texts]
    rewards = scorer.score([r for r, _ in pairs], [text for _, text in pairs])
    scored = [Scored(r["id"], text, float(value), iteration) for (r, text), value in zip(pairs, rewards)]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for s in scored:
            fh.write(json.dumps({"id": s.prompt_id, "response": s.response, "reward": s.reward}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return scored


def _m_step(cfg: Config, init: str, kept_path: Path, kept: int, out: Path, iteration: int) -> str:
    from chatforge.engine.config import TrainConfig
    from chatforge.stages import sft

    final = out / "final"
    if (out / "report" / "summary.json").is_file() and final.is_dir():
        return str(final)
    m = cfg.m_step
    steps = max(1, math.ceil(m.epochs * kept / m.micro_batch_size))
    if m.max_steps is not None:
        steps = min(steps, m.max_steps)
    micro = min(m.micro_batch_size, kept)  # one epoch must hold a step
    print(f"iteration {iteration} M-step: {kept} conversations, {steps} steps of {micro} from {init}")
    sft_cfg = sft.Config(
        out=str(out), model=init, tokenizer=cfg.tokenizer if init == cfg.model else None,
        data=sft.SFTDataConfig(sources=[{"path": str(kept_path), "format": "messages"}], seq_len=m.seq_len, packing="pad"),
        mode=m.mode, optim=m.optim,
        train=TrainConfig(max_steps=steps, micro_batch_size=micro, save_every=0, eval_every=0, progress=False, seed=cfg.seed + iteration),
    )
    sft.run(sft_cfg)
    return str(final)


def _evaluate(cfg: Config, policy_dir: str, train: list[dict], test: list[dict], path: Path) -> dict:
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("policy") == policy_dir and "per_prompt" in saved["metrics"]["test"]:
            return saved["metrics"]
    policy = Policy(policy_dir, cfg.tokenizer if policy_dir == cfg.model else None)
    metrics = evaluate_policy(policy, train, test, cfg.eval)
    path.write_text(json.dumps({"policy": policy_dir, "metrics": metrics}, indent=2) + "\n", encoding="utf-8")
    return metrics


def _columns(cfg: Config) -> list[str]:
    ks = [k for k in cfg.eval.ks if k <= cfg.eval.n]
    return (["greedy"] if cfg.eval.greedy else []) + [f"pass@{k}" for k in ks] + [f"maj@{cfg.eval.n}"]


def gains_over(base: dict, policy: dict, columns: list[str]) -> dict[str, dict[str, float]]:
    """Per metric: the policy's held-out mean minus the base policy's over the same prompts, with the
    standard error of the paired differences and the gain in standard errors."""
    from chatforge.rl.evaluate import paired_gain

    before, after = base["per_prompt"], policy["per_prompt"]
    if len(before) != len(after):
        raise ChatforgeError(f"rest: {len(before)} and {len(after)} held-out prompts evaluated; gains need the same prompts")
    return {c: paired_gain([r[c] for r in before], [r[c] for r in after]) for c in columns}


def format_row(row: dict, cfg: Config) -> str:
    test, train = row["eval"]["test"]["all"], row["eval"]["train"]["all"]
    parts = [f"{c} {test[c]:.3f}" for c in _columns(cfg)]
    line = f"iteration {row['iteration']}: held-out " + ", ".join(parts) + f" | train pass@1 {train['pass@1']:.3f}"
    gain = row.get("gain_over_base", {}).get("pass@1")
    if gain is not None:
        line += f" | held-out pass@1 over iteration 0: {gain['gain']:+.3f} ± {gain['se']:.3f} ({gain['z']:+.1f} SE)"
    return line


def format_table(rows: list[dict], cfg: Config) -> str:
    columns = _columns(cfg)
    lines = [
        "| iteration | kept | train pass@1 | " + " | ".join(f"test {c}" for c in columns)
        + " | gap (train - test pass@1) | test pass@1 over iteration 0 (paired SE) |",
        "|---" * (len(columns) + 5) + "|",
    ]
    for row in rows:
        if "eval" not in row:
            continue
        train, test = row["eval"]["train"]["all"], row["eval"]["test"]["all"]
        kept = row.get("e_step", {}).get("kept", "-")
        gain = row.get("gain_over_base", {}).get("pass@1")
        cells = [str(row["iteration"]), str(kept), f"{train['pass@1']:.3f}", *(f"{test[c]:.3f}" for c in columns),
                 f"{train['pass@1'] - test['pass@1']:+.3f}",
                 "-" if gain is None else f"{gain['gain']:+.3f} ± {gain['se']:.3f} ({gain['z']:+.1f} SE)"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_task_table(rows: list[dict], cfg: Config, split: str = "test", group: str = "by_group") -> str:
    """Per task (arithmetic, reverse, ...; `group="by_operator"`: per arithmetic operator): each
    iteration's `split` metrics, one row per (task, iteration)."""
    columns = _columns(cfg)
    head = "task" if group == "by_group" else "operator"
    lines = [f"| {head} | iteration | prompts | " + " | ".join(f"{split} {c}" for c in columns) + " |", "|---" * (len(columns) + 3) + "|"]
    done = [r for r in rows if "eval" in r]
    tasks = sorted({t for r in done for t in r["eval"][split].get(group, {})})
    for task in tasks:
        for row in done:
            m = row["eval"][split].get(group, {}).get(task)
            if m:
                lines.append(f"| {task} | {row['iteration']} | {m['prompts']} | " + " | ".join(f"{m[c]:.3f}" for c in columns) + " |")
    return "\n".join(lines)


def _plot(rows: list[dict], cfg: Config, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if "eval" in r]
    its = [r["iteration"] for r in done]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(its, [r["eval"]["train"]["all"]["pass@1"] for r in done], "o-", label="train pass@1")
    for column in _columns(cfg):
        ax.plot(its, [r["eval"]["test"]["all"][column] for r in done], "o--", label=f"test {column}")
    ax.set_xlabel("iteration (0 = base model)")
    ax.set_ylabel("accuracy")
    ax.set_xticks(its)
    ax.set_title(f"{cfg.method}: train vs held-out")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
