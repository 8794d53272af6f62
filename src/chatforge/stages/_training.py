"""The one training-stage skeleton: everything a training stage does around its own model, data and objective.

A stage subclasses `TrainingStage` and supplies what is its own:

    prepare(ctx)  -> Plan(model, objective, batches, tokenizer, evaluate, ...)   read data, load the model
    started(ctx, plan, engine)            optional: work that needs the built engine (before training)
    finish(ctx, plan, trained) -> dict    the stage's summary keys; evaluations of the exported model
    closing(ctx, summary) -> str          the last line printed

`train(cfg, stage)` does the rest, once for every stage, in this order:
  1. device and distributed setup; config checks every stage shares (LoRA with FSDP2)
  2. run directory, resolved config.yaml (main process), seeding, the reject log
  3. stage.prepare; the reject summary line; the training mode (full / lora / freeze / full_then_lora)
  4. the dynamics probes (when the config has `dynamics`) riding on the evaluate callable
  5. the engine (one per segment: full_then_lora trains a full then a LoRA segment on one schedule)
  6. export of final/ (the only place a training stage writes final/), then a barrier
  7. stage.finish, the common summary keys, report/summary.json, the closing line

The config must have `out`, `train` (TrainConfig), `optim` and `schedule`; `mode`, `lora`, `freeze`,
`full_then_lora` and `dynamics` are used when present.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from chatforge.atomic_dir import atomic_dir, check_complete
from chatforge.engine import distributed as dist
from chatforge.engine.loop import Batches, Engine, Evaluate, Objective, TrainResult
from chatforge.engine.schedules import default_schedule  # noqa: F401  (the stages import it from here)
from chatforge.errors import ConfigError
from chatforge.run_dir import RejectLog, RunDir

ADAPTER_MODES = ("lora", "full_then_lora")


@dataclass
class Context:
    """What the skeleton has set up when it calls the stage."""

    cfg: Any
    info: dist.DistInfo
    device: torch.device
    run_dir: RunDir
    rejects: RejectLog
    say: Callable[..., None]  # print on the main process, nothing elsewhere

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    @property
    def rows_per_step(self) -> int:
        """Rows (or pairs, or groups) of one optimizer step over all micro-batches and ranks."""
        train = self.cfg.train
        return train.micro_batch_size * train.grad_accum_steps * self.info.world_size


@dataclass
class Plan:
    """What a stage supplies to be trained."""

    model: torch.nn.Module
    objective: Objective
    batches: Batches
    tokenizer: Any  # saved into final/
    evaluate: Evaluate | None = None
    # said once before training, after the mode is applied: a string is .format()ted with `trainable` and
    # `total` (parameter counts; double any other brace), a callable gets (trainable, total)
    describe: str | Callable[[int, int], str] = ""
    # full / lora / freeze / full_then_lora (default: cfg.mode, else full); None: the stage set requires_grad itself
    mode: str | None = "auto"
    lora_task: str = "CAUSAL_LM"  # peft task type; SEQ_CLS for a reward model (its score head trained in full)
    export_tokenizer: Any = None  # a different tokenizer for final/ (C-RLFT's conditioned template)
    flops_per_token: float | None = None
    param_groups: Callable | None = None
    summary: dict = field(default_factory=dict)  # facts known before training, merged into summary.json


@dataclass
class Trained:
    """What training left: the last engine, its result, one record per segment, parameter counts."""

    engine: Engine
    result: TrainResult
    segments: list[dict]
    trainable: int
    total: int

    @property
    def tokens_per_s(self) -> float | None:
        return self.segments[-1]["tokens_per_s"]

    @property
    def peak_memory(self) -> dict:
        return max((seg["peak_memory"] for seg in self.segments), key=lambda m: m.get("peak_bytes", 0))


class TrainingStage:
    """A training stage: override prepare and finish (and, if needed, check, started, closing)."""

    dynamics_title = "learning dynamics"  # the dynamics plot's title after the run name

    def check(self, cfg: Any) -> None:
        """Config errors found before anything is written (raise ConfigError)."""

    def prepare(self, ctx: Context) -> Plan:
        raise NotImplementedError

    def started(self, ctx: Context, plan: Plan, engine: Engine) -> None:
        """Called once the (first) engine is built, before it trains."""

    def finish(self, ctx: Context, plan: Plan, trained: Trained) -> dict:
        """The stage's summary keys, after final/ is written (every process; evaluate on the main one)."""
        return {}

    def closing(self, ctx: Context, summary: dict) -> str:
        return f"done: {ctx.run_dir.final}"


def train(cfg: Any, stage: TrainingStage) -> dict:
    """Run `stage` under `cfg` (steps 1-7 of the module docstring) and return its summary."""
    stage.check(cfg)
    info, device = dist.init(cfg.train.device)
    say = print if info.is_main else (lambda *_, **__: None)
    mode = getattr(cfg, "mode", None)
    if mode in ADAPTER_MODES and info.enabled and cfg.train.distributed == "fsdp2":
        raise ConfigError(f"mode={mode} with train.distributed=fsdp2 is not supported yet; use ddp")
    run_dir = RunDir.create(cfg.out)
    if info.is_main:
        run_dir.write_config(cfg)
    torch.manual_seed(cfg.train.seed)
    with RejectLog(run_dir.rejected if info.is_main else None) as rejects:
        ctx = Context(cfg, info, device, run_dir, rejects, say)
        plan = stage.prepare(ctx)
        if plan.mode == "auto":
            plan.mode = mode or "full"
        if rejects.total:
            say(rejects.summary_line())
        probes = None
        if getattr(cfg, "dynamics", None) is not None:
            from chatforge.dynamics.hook import ProbeHook

            probes = ProbeHook(cfg.dynamics, plan.tokenizer, run_dir.root, write=info.is_main, say=say)
        trained = _fit(ctx, stage, plan, probes)
        _export(ctx, plan, trained.engine)
        summary = {
            **({"mode": plan.mode} if plan.mode is not None else {}),
            "steps": trained.result.step,
            "trainable_parameters": trained.trainable,
            "parameters": trained.total,
            **plan.summary,
            **stage.finish(ctx, plan, trained),
            "rejected": dict(rejects.counts),
        }
        if probes is not None:
            summary["dynamics"] = probes.finish(f"{run_dir.root.name}: {stage.dynamics_title}")
        elif hasattr(cfg, "dynamics"):
            summary["dynamics"] = None
    if info.is_main:
        run_dir.write_summary(summary)
        print(stage.closing(ctx, summary))
    return summary


def _fit(ctx: Context, stage: TrainingStage, plan: Plan, probes) -> Trained:
    """Train as the mode says: one engine, or for full_then_lora a full segment (steps 1..switch)
    then a LoRA segment (switch+1..max_steps) on one schedule.

    A resumed full_then_lora run whose checkpoints are already past the switch skips the full
    segment: the LoRA segment's checkpoints hold the whole model (base weights and adapters)."""
    from chatforge.engine.checkpoint import list_checkpoints

    cfg, run_dir, built = ctx.cfg, ctx.run_dir, []

    def segment(mode: str | None, model, optim, **bounds) -> tuple[Engine, TrainResult, dict]:
        from chatforge.sft.modes import apply_mode, trainable_parameters

        if mode is not None:
            model = apply_mode(
                model, mode, getattr(cfg, "lora", None), getattr(cfg, "freeze", None), task_type=plan.lora_task
            )
        trainable, total = trainable_parameters(model)
        if not built and plan.describe:
            said = plan.describe(trainable, total) if callable(plan.describe) else plan.describe.format(trainable=trainable, total=total)
            ctx.say(said)
        if mode is not None:
            ctx.say(f"{mode}: {trainable:,} of {total:,} parameters trainable ({100 * trainable / total:.2f}%)")
        evaluate, train_cfg = plan.evaluate, cfg.train
        if probes is not None:  # dynamics: the probes ride on the evaluate callable (dynamics.hook)
            evaluate, train_cfg = probes.wrap(plan.evaluate, cfg.train)
        engine = Engine(
            model, plan.objective, plan.batches, train_cfg, optim, cfg.schedule, run_dir, evaluate=evaluate,
            flops_per_token=plan.flops_per_token, log_config=cfg.model_dump(mode="json"), name=run_dir.root.name,
            param_groups=plan.param_groups, **bounds,
        )
        if probes is not None:
            probes.attach(engine)
        if not built:
            stage.started(ctx, plan, engine)
        built.append(mode)  # the modes trained so far
        first = engine.step
        result = engine.fit()
        first = result.resumed_from if result.resumed_from is not None else first
        record = {
            "mode": mode, "steps": [first, result.step], "trainable_parameters": trainable, "parameters": total,
            "tokens_per_s": _median_tokens_per_s(run_dir, first, result.step), "peak_memory": result.peak_memory,
        }
        return engine, result, record

    if plan.mode != "full_then_lora":
        engine, result, record = segment(plan.mode, plan.model, cfg.optim)
        return Trained(engine, result, [record], record["trainable_parameters"], record["parameters"])
    switch = cfg.full_then_lora.switch_at(cfg.train.max_steps)
    segments, model, tokens = [], plan.model, 0
    saved = list_checkpoints(run_dir.checkpoints) if cfg.train.resume != "never" else []
    if not saved or saved[-1] <= switch:
        full, _, record = segment("full", model, cfg.optim, stop_at=switch)
        segments.append(record)
        model, tokens = dist.unwrap(full.model), full.tokens_seen
        del full  # its optimizer state (two moments per weight) is not needed by the LoRA segment
    lora_optim = cfg.optim.model_copy(update={"lr": cfg.full_then_lora.lora_lr or cfg.optim.lr})
    ctx.say(f"full_then_lora: switching to LoRA after step {switch} of {cfg.train.max_steps}")
    engine, result, record = segment("lora", model, lora_optim, start_step=switch, start_tokens=tokens)
    return Trained(engine, result, [*segments, record], record["trainable_parameters"], record["parameters"])


def _export(ctx: Context, plan: Plan, engine: Engine) -> None:
    """final/: a plain `transformers` directory (LoRA merged in; the adapter alone to adapter/ when
    lora.save_adapter), with the tokenizer. The one place a training stage writes final/."""
    from chatforge.sft.modes import export_model

    tokenizer = plan.export_tokenizer if plan.export_tokenizer is not None else plan.tokenizer
    # Written into a hidden temporary and renamed into place with a completeness marker, so a kill
    # mid-export leaves no partial final/ for a later stage (atomic_dir.check_complete). Only the main
    # process writes; the others take part in the engine's gather of sharded weights.
    writing = atomic_dir(ctx.run_dir.final) if ctx.is_main else contextlib.nullcontext(ctx.run_dir.final)
    with writing as out:
        if plan.mode in ADAPTER_MODES:
            if ctx.is_main:
                lora = getattr(ctx.cfg, "lora", None)
                adapter = ctx.run_dir.root / "adapter" if lora is not None and lora.save_adapter else None
                export_model(dist.unwrap(engine.model), plan.mode, out, tokenizer, adapter)
        else:
            engine.export(out, tokenizer)
    dist.barrier(ctx.info)


def _median_tokens_per_s(run_dir: RunDir, first: int, last: int) -> float | None:
    """Median of the logged tokens/s over steps first+1..last (the engine's windowed throughput)."""
    from chatforge.engine.log import read_metrics

    values = [
        row["tokens_per_s"] for row in read_metrics(run_dir.metrics)
        if "tokens_per_s" in row and first < row.get("step", 0) <= last
    ]
    return statistics.median(values) if values else None


def load_causal_lm(path, tokenizer=None, device: torch.device | None = None) -> torch.nn.Module:
    """A Hugging Face causal LM in float32 (on `device` when given), checked to cover `tokenizer`."""
    from transformers import AutoModelForCausalLM

    check_complete(path)
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False, dtype=torch.float32)
    vocab = model.get_input_embeddings().weight.shape[0]
    if tokenizer is not None and len(tokenizer) > vocab:
        raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only {vocab}")
    return model.to(device) if device is not None else model
