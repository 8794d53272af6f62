"""What the online-RL stages (ppo, grpo, online_dpo) share inside the training skeleton: prompts, the
frozen reference, the rollout Batches, the held-out evaluator and the closing summary."""

from __future__ import annotations

import copy
import json

import torch

from chatforge.errors import ConfigError
from chatforge.rl.config import check_rows, uses_reference


def load_rl_prompts(ctx) -> tuple[list[dict], list[dict]]:
    """(training, held-out) prompt records (world layout; unusable lines go to rejected.jsonl)."""
    from chatforge.data.prompts import load_prompts

    data = ctx.cfg.data
    train = load_prompts(data.sources, data.max_prompts, ctx.rejects, data.tasks)
    test = load_prompts(data.val_sources, data.max_val_prompts, ctx.rejects, data.tasks) if data.val_sources else []
    return train, test


def frozen_reference(cfg, model: torch.nn.Module, device) -> torch.nn.Module | None:
    """The reference policy: None when the run needs none (kl.coef = 0 and no adaptive KL: nothing is
    loaded or copied, `RolloutBatches` runs no reference forward); `cfg.reference` if given; None for
    LoRA (the base with adapters off); else a frozen copy of the starting model. Eval mode, no gradients."""
    from chatforge.models.build import load_pretrained

    if not uses_reference(getattr(cfg, "kl", None)):
        return None
    if cfg.reference is not None:
        reference = load_pretrained(cfg.reference).to(device)
    elif getattr(cfg, "mode", "full") == "lora":
        return None
    else:
        reference = copy.deepcopy(model)
    reference.eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference


def ptx_stream(ctx, tokenizer):
    """PPO-ptx's pretraining windows: the token caches of `chatforge pretrain`, one window per row."""
    from chatforge.data.lm_data import DataConfig, prepare_lm_data

    ptx = ctx.cfg.ptx
    data = DataConfig(sources=ptx.sources, seq_len=ptx.seq_len, packing="concat", val_fraction=0.0, cache_dir=ptx.cache_dir)
    lm = prepare_lm_data(data, tokenizer, ctx.rejects, ctx.cfg.train.seed, ctx.cfg.train.max_steps, {}, ctx.say)
    accum, world = ctx.cfg.train.grad_accum_steps, ctx.info.world_size
    if ptx.rows_per_step % (accum * world):
        raise ConfigError(f"ptx.rows_per_step={ptx.rows_per_step} does not split over train.grad_accum_steps={accum} "
                          f"micro-batches x {world} process(es)")
    # the step's windows depend only on their row index, so splitting a step differently (over micro-batches or
    # ranks: each rank its share of the step's rows_per_step windows) draws the same ones
    return lm.stream(ptx.rows_per_step // (accum * world), ptx.rows_per_step, ctx.cfg.train.seed, ctx.info.rank, world)


def ranks(ctx):
    """This process's place among the torchrun ranks (rl/ranks.py); ddp only (each rank samples and scores
    its rollouts with the whole policy, which fsdp2 would shard)."""
    from chatforge.rl.ranks import Ranks

    if ctx.info.world_size > 1 and ctx.cfg.train.distributed != "ddp":
        raise ConfigError(f"train.distributed={ctx.cfg.train.distributed}: online RL under torchrun needs ddp (each rank "
                          "samples and scores its rollouts with the whole policy; fsdp2 shards it)")
    return Ranks(ctx.info.rank, ctx.info.world_size)


def rollout_batches(ctx, train: list[dict], tokenizer, objective, reference, ptx=None):
    """The rollout Batches; under torchrun each rank samples its share of every rollout's prompts
    (`rollout.prompts_per_rollout` is the whole batch's, as `train.micro_batch_size x grad_accum_steps x
    processes` is the whole step's)."""
    from chatforge.rl.rollout import RolloutBatches

    cfg = ctx.cfg
    rows = cfg.rollout.prompts_per_rollout * cfg.rollout.samples_per_prompt
    try:
        check_rows(rows, cfg.train.micro_batch_size, cfg.train.grad_accum_steps, ctx.info.world_size, "rollout")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return RolloutBatches(
        train, tokenizer, objective, cfg.rollout, cfg.reward, cfg.kl, cfg.diagnostics, cfg.train.micro_batch_size,
        ctx.run_dir.root, seed=cfg.train.seed, reference=reference, ptx=getattr(cfg, "ptx", None), ptx_stream=ptx,
        rows_per_step=cfg.train.micro_batch_size * cfg.train.grad_accum_steps, say=ctx.say, write=ctx.is_main,
        ranks=ranks(ctx),
    )


def evaluator(ctx, test: list[dict], tokenizer, batches):
    from chatforge.rl.evaluate import PolicyEvaluator

    if not test:
        return None
    return PolicyEvaluator(test, tokenizer, ctx.cfg.eval, batches.gold or batches.scorer, batches.scorer, batches,
                           ctx.cfg.rollout.forward_batch_size)


def describe(ctx, name: str, train: list[dict], test: list[dict]) -> str:
    cfg = ctx.cfg
    rows = cfg.rollout.prompts_per_rollout * cfg.rollout.samples_per_prompt
    steps = cfg.rollout.epochs * rows // (cfg.train.micro_batch_size * cfg.train.grad_accum_steps)
    return (
        f"{name}: {len(train)} training prompts, {len(test)} held out | rollout: {cfg.rollout.prompts_per_rollout} prompts x "
        f"{cfg.rollout.samples_per_prompt} samples, {cfg.rollout.epochs} epoch(s) = {steps} optimizer steps per rollout | "
        f"{cfg.train.max_steps} steps (~{cfg.train.max_steps // max(steps, 1)} rollouts) | KL {cfg.kl.estimator} "
        f"{'in the reward' if cfg.kl.in_reward else 'as a loss'}, beta {cfg.kl.coef}"
        f"{' (adaptive)' if cfg.kl.adaptive else ''}{'' if uses_reference(cfg.kl) else ' (no reference model)'}"
        f" | {{trainable:,}} of {{total:,}} parameters trainable"
    )


def finish_summary(ctx, batches, evaluate, trained, title: str) -> dict:
    """The summary keys every RL stage writes: rollouts, warnings, held-out before/after with the paired gain."""
    from chatforge.rl.diagnostics import plot_rollouts
    from chatforge.rl.evaluate import paired_gain

    summary: dict = {
        "final_train": trained.result.last_metrics, "rollouts": batches.index, "kl_coef": batches.kl.value if batches.kl is not None else None,
        "warnings": batches.log.warnings,
    }
    if evaluate is not None and evaluate.history:
        first, last = evaluate.history[0], evaluate.history[-1]
        summary["eval"] = {"start": {"step": first["step"], **first["metrics"]}, "final": {"step": last["step"], **last["metrics"]}}
        if len(evaluate.history) > 1:
            summary["gold_gain"] = paired_gain(first["gold"], last["gold"])
            if "greedy_gold" in first:
                summary["greedy_gold_gain"] = paired_gain(first["greedy_gold"], last["greedy_gold"])
        if ctx.is_main:
            path = ctx.run_dir.root / "eval_history.jsonl"
            path.write_text("".join(json.dumps(h) + "\n" for h in evaluate.history), encoding="utf-8")
    if ctx.is_main:
        plot_rollouts(batches.log.history, ctx.run_dir.report / "rollouts.png", title)
    return summary


def closing(ctx, summary: dict) -> str:
    gain = summary.get("gold_gain")
    held = ""
    if gain:
        final = summary["eval"]["final"]
        held = (
            f" | held-out gold {summary['eval']['start']['eval/gold']:.3f} -> {final['eval/gold']:.3f} "
            f"(gain {gain['gain']:+.3f} ± {gain['se']:.3f}, {gain['z']:.1f} SE) at KL {final['eval/kl']:.2f} nats"
        )
    return f"done: {ctx.run_dir.final} | {summary['rollouts']} rollout batches, {len(summary['warnings'])} warnings{held}"
