"""The one training loop. Every stage supplies a model, batches and an objective; the loop owns the rest.

    objective(model, batch) -> StepOutput(loss_sum, count, sums)

The objective returns a *sum* over its counted units (valid tokens for language modelling, pairs
for preference losses) and the count. The loop backpropagates the raw sums of all micro-batches,
then scales the gradients by 1 / (count over all micro-batches and ranks). So a step's update is
the exact mean over the whole global batch however it is split: micro-batch 1 x 8 accumulation
steps trains like batch 8 x 1, and 2 ranks like 1.

Each optimizer step:
  1. set the LR from the schedule (a function of the step within this run)
  2. forward/backward every micro-batch on its raw loss sum (DDP syncs only on the last one)
  3. all-reduce the count, scale the gradients, clip the global norm
  4. optimizer step; log loss, LR, grad norm, tokens/s, MFU; evaluate and checkpoint on schedule
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.distributed.tensor import DTensor

from chatforge.engine import checkpoint as ckpt
from chatforge.engine import distributed as dist
from chatforge.engine.config import OptimConfig, TrainConfig
from chatforge.engine.hardware import PeakMemory, peak_tflops
from chatforge.engine.log import MetricsLogger, Progress, Throughput, now, read_metrics
from chatforge.engine.optim import build_optimizer
from chatforge.engine.plots import plot_training_curves
from chatforge.engine.schedules import ScheduleConfig, lr_multiplier
from chatforge.errors import ChatforgeError, CheckpointError
from chatforge.run_dir import RunDir


def _finite(tensor: torch.Tensor) -> bool:
    """Whether this rank's part of `tensor` (the local shard of an FSDP2 DTensor) is all finite."""
    if isinstance(tensor, DTensor):
        tensor = tensor.to_local()
    return bool(torch.isfinite(tensor).all())


class TrainingDiverged(ChatforgeError):
    """The loss or the gradient norm is not finite: the run stops before the update that would
    spread NaN into the weights, and before any checkpoint of such weights is written."""


@dataclass
class StepOutput:
    loss_sum: torch.Tensor  # scalar, summed over the counted units of this micro-batch
    count: torch.Tensor | int  # how many units the sum covers (valid tokens, pairs, ...)
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # metric sums, reported per unit
    tokens: int | None = None  # tokens processed, for throughput; default: batch["input_ids"].numel()
    # metric -> (numerator, denominator), each summed over the step's micro-batches and ranks, then
    # divided: e.g. the loss of one data source over that source's own tokens
    ratios: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


class Objective(Protocol):
    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput: ...


class Batches(Protocol):
    def next_batch(self) -> dict[str, torch.Tensor]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


Evaluate = Callable[[torch.nn.Module], dict[str, float]]


@dataclass
class TrainResult:
    step: int
    last_metrics: dict[str, float]
    eval_metrics: dict[str, float]
    resumed_from: int | None
    peak_memory: dict = field(default_factory=dict)  # hardware.PeakMemory.result() over fit()


class Engine:
    def __init__(
        self,
        model: torch.nn.Module,
        objective: Objective,
        batches: Batches,
        train: TrainConfig,
        optim: OptimConfig,
        schedule: ScheduleConfig,
        run: RunDir,
        evaluate: Evaluate | None = None,
        flops_per_token: float | None = None,
        log_config: dict[str, Any] | None = None,
        name: str = "train",
        start_step: int = 0,
        stop_at: int | None = None,
        start_tokens: int = 0,
        param_groups: Callable[[torch.nn.Module, float], list[dict]] | None = None,
    ):
        """`start_step`/`stop_at` run one segment of a longer run (steps `start_step+1..stop_at`) on one
        schedule laid out over `train.max_steps`: a run that changes its model mid-way (SFT's
        full-then-LoRA) trains each segment with its own Engine. A checkpoint is saved at `stop_at`.
        `start_tokens` carries the token count of earlier segments. `param_groups(model, weight_decay)` replaces the optimizer's default weight-decay groups."""
        if not 0 <= start_step <= (stop_at if stop_at is not None else train.max_steps) <= train.max_steps:
            raise ValueError(f"need 0 <= start_step ({start_step}) <= stop_at ({stop_at}) <= max_steps ({train.max_steps})")
        self.cfg, self.optim_cfg, self.schedule = train, optim, schedule
        # Laid out once (and checked to fit max_steps) before any work, not rebuilt every step.
        self.lr_factor = lr_multiplier(schedule, train.max_steps)
        self.objective, self.batches, self.evaluate_fn = objective, batches, evaluate
        self.run, self.name = run, name
        self.info, self.device = dist.init(train.device)
        if train.deterministic:
            torch.use_deterministic_algorithms(True)
        self.model = dist.wrap(model.to(self.device), train.distributed, self.info, self.device)
        if self.info.enabled:
            self._say(f"data parallel: {train.distributed} over {self.info.world_size} processes ({dist.backend()})")
        self.optimizer = build_optimizer(self.model, optim, self.device, param_groups)
        if train.compile:
            dist.unwrap(self.model).compile()  # in place, so state-dict keys stay plain
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.autocast = self._autocast_context()
        self.flops_per_token = flops_per_token
        self.step = start_step
        self.stop_at = train.max_steps if stop_at is None else stop_at
        self.tokens_seen = start_tokens
        self.resumed_from: int | None = None
        self._log_config = log_config or {}

    # ---- setup -------------------------------------------------------------------------------
    def _autocast_context(self) -> Callable[[], contextlib.AbstractContextManager]:
        precision = self.cfg.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        if precision == "bf16":
            return lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext

    def maybe_resume(self) -> None:
        if self.cfg.resume == "never":
            return
        latest = ckpt.latest_checkpoint(self.run.checkpoints)
        if latest is not None and self.step > 0 and int(latest.name.removeprefix("step_")) <= self.step:
            latest = None  # a later segment resumes only from its own checkpoints, not the previous segment's
        if latest is None:
            if self.cfg.resume == "must":
                raise CheckpointError(f"resume=must but {self.run.checkpoints} has no checkpoint")
            return
        state = ckpt.load_checkpoint(latest, self.model, self.optimizer)
        self.step, self.tokens_seen = int(state["step"]), int(state["tokens_seen"])
        self.batches.load_state_dict(state["data"])
        self.resumed_from = self.step
        self._say(f"resumed from {latest} (step {self.step})")

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg = self.cfg
        self.maybe_resume()
        logger = MetricsLogger(
            self.run.metrics, self.info.is_main, cfg.report_to, self.run.root.name, self._log_config, self.step
        )
        progress = Progress(self.stop_at, self.step, cfg.progress and self.info.is_main, self.name)
        peak = peak_tflops(self.device, cfg.peak_tflops) if self.flops_per_token else None
        throughput = Throughput()
        memory = PeakMemory(self.device)
        memory.start()
        last: dict[str, float] = {}
        eval_metrics: dict[str, float] = {}
        data_state_at_step_start = self.batches.state_dict()
        rng_at_step_start = ckpt.rng_state()
        if self.evaluate_fn and cfg.eval_at_start and self.step == 0 and (baseline := self._evaluate()):
            logger.log(0, baseline)
        try:
            while self.step < self.stop_at:
                data_state_at_step_start = self.batches.state_dict()
                rng_at_step_start = ckpt.rng_state()  # dropout may have drawn from it when Ctrl-C comes
                started = now()
                lr = self._set_lr()
                loss, sums, grad_norm, tokens = self._train_step()
                self.step += 1
                self.tokens_seen += tokens
                tok_s = throughput.add(now() - started, tokens)
                last = {"loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tok_s, "tokens": self.tokens_seen}
                last.update(sums)
                if peak:
                    last["mfu"] = self.flops_per_token * tok_s / (peak * 1e12 * self.info.world_size)
                if self.step % cfg.log_every == 0 or self.step == self.stop_at:
                    logger.log(self.step, last)
                progress.update(loss, tok_s, lr)
                if self.evaluate_fn and ((cfg.eval_every and self.step % cfg.eval_every == 0) or self.step == self.stop_at):
                    # An evaluate that measured nothing this step (dynamics probes between the stage's
                    # evaluations report themselves) leaves no empty row or "step N:" line.
                    if measured := self._evaluate():
                        eval_metrics = measured
                        logger.log(self.step, eval_metrics)
                        if self.info.is_main:
                            progress.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))
                if (cfg.save_every and self.step % cfg.save_every == 0) or self.step == self.stop_at:
                    self.save(self.batches.state_dict())
        except KeyboardInterrupt:
            # The interrupted step never updated the weights, so save the data position from its start.
            if self.info.is_main:
                progress.write(f"interrupted: saving a checkpoint at step {self.step}")
            self.save(data_state_at_step_start, rng_at_step_start)
            raise
        finally:
            progress.close()
            logger.close()
        if self.evaluate_fn and not eval_metrics and self.resumed_from == self.stop_at:
            eval_metrics = self._evaluate()  # resumed a finished run: still report its evaluation
        if self.info.is_main:
            plot_training_curves(read_metrics(self.run.metrics), self.run.report, self.name)
        return TrainResult(self.step, last, eval_metrics, self.resumed_from, memory.result())

    def _set_lr(self) -> float:
        lr = self.optim_cfg.lr * self.lr_factor(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # a group's own scale (PPO's critic)
        return lr

    def _train_step(self) -> tuple[float, dict[str, float], float, int]:
        self.model.train()
        accum = self.cfg.grad_accum_steps
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        count = torch.zeros((), device=self.device, dtype=torch.float64)
        sums: dict[str, torch.Tensor] = {}
        tokens = 0
        for micro in range(accum):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in self.batches.next_batch().items()}
            sync = micro == accum - 1
            no_sync = self.model.no_sync if (hasattr(self.model, "no_sync") and not sync) else contextlib.nullcontext
            with no_sync():
                with self.autocast():
                    out = self.objective(self.model, batch)
                out.loss_sum.backward()
            loss_sum += out.loss_sum.detach().double()
            count += torch.as_tensor(out.count, device=self.device, dtype=torch.float64)
            for key, value in out.sums.items():
                sums[key] = sums.get(key, 0) + torch.as_tensor(value, device=self.device, dtype=torch.float64).detach()
            for key, pair in out.ratios.items():
                for part, value in zip(("\0num", "\0den"), pair):
                    value = torch.as_tensor(value, device=self.device, dtype=torch.float64).detach()
                    sums[key + part] = sums.get(key + part, 0) + value
            tokens += out.tokens if out.tokens is not None else int(batch["input_ids"].numel())
        # One all-reduce for everything the step reports.
        keys = sorted(sums)
        packed = torch.stack([loss_sum, count, torch.tensor(float(tokens), device=self.device, dtype=torch.float64)] + [sums[k] for k in keys])
        packed = dist.all_reduce_sum(packed, self.info)
        global_loss, global_count, global_tokens = packed[0].item(), packed[1].item(), int(packed[2].item())
        if global_count <= 0:
            self.optimizer.zero_grad(set_to_none=True)
            return math.nan, {}, 0.0, global_tokens
        # DDP and FSDP2 average gradients over ranks; undo that and divide by the global count.
        grads = [p.grad for p in self.params if p.grad is not None]
        torch._foreach_mul_(grads, self.info.world_size / global_count)
        max_norm = self.optim_cfg.max_grad_norm if self.optim_cfg.max_grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        # The loss is all-reduced and the norm is global, so every rank takes this branch together.
        if not (math.isfinite(global_loss) and math.isfinite(float(grad_norm))):
            message = self._divergence(global_loss / global_count, float(grad_norm))
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(message)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        totals = dict(zip(keys, packed[3:].tolist()))
        metrics = {k: v / global_count for k, v in totals.items() if "\0" not in k}
        for key in keys:
            if key.endswith("\0num") and totals[key[:-4] + "\0den"] > 0:
                metrics[key[:-4]] = totals[key] / totals[key[:-4] + "\0den"]
        return global_loss / global_count, metrics, float(grad_norm), global_tokens

    def _evaluate(self) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad(), self.autocast():
            result = self.evaluate_fn(self.model)
        self.model.train()
        return result

    def _divergence(self, loss: float, grad_norm: float) -> str:
        """One line: where it diverged, what is not finite, what was kept, and what to try."""
        step = self.step + 1
        bad_grads = [n for n, p in self.model.named_parameters() if p.grad is not None and not _finite(p.grad)]
        bad_weights = self._non_finite_weights()
        latest = ckpt.latest_checkpoint(self.run.checkpoints)
        kept = f"the last checkpoint is {latest}" if latest is not None else "no checkpoint was written"
        grads = f"; non-finite gradients in {len(bad_grads)} tensors (first: {bad_grads[0]})" if bad_grads else ""
        weights = (f"; the weights were already non-finite in {len(bad_weights)} tensors (first: {bad_weights[0]})"
                   if bad_weights else "; the weights are still finite")
        lr = self.optimizer.param_groups[0]["lr"]
        return (f"training diverged at step {step}: loss {loss}, gradient norm {grad_norm}{grads}{weights}; "
                f"the step was not applied and {kept}. Lower optim.lr (this step used {lr:.3g}), lengthen the "
                "warmup, or check the data of this step")

    def _non_finite_weights(self) -> list[str]:
        """Names of parameters holding NaN or infinity, agreed over ranks (FSDP2 shards differ)."""
        bad = [n for n, p in self.model.named_parameters() if not _finite(p.detach())]
        flag = dist.all_reduce_sum(torch.tensor(float(len(bad)), device=self.device), self.info)
        return bad or (["(on another rank)"] if flag.item() > 0 else [])

    # ---- state -------------------------------------------------------------------------------
    def save(self, data_state: dict, rng: dict | None = None) -> Path | None:
        """Write a checkpoint, unless the weights hold NaN/infinity: a resume from it could only
        reproduce the divergence, and it would replace the last good one."""
        if bad := self._non_finite_weights():
            raise TrainingDiverged(
                f"not saving step {self.step}: the weights are non-finite in {len(bad)} tensors (first: {bad[0]}); "
                f"the last good checkpoint stays {ckpt.latest_checkpoint(self.run.checkpoints)}. Lower optim.lr"
            )
        state = {"step": self.step, "tokens_seen": self.tokens_seen, "data": data_state}
        if rng is not None:
            state["rng"] = rng
        return ckpt.save_checkpoint(self.run.checkpoints, self.step, self.model, self.optimizer, state, self.info, self.cfg.keep_last)

    def export(self, out_dir: Path, tokenizer=None) -> None:
        """Write a Hugging Face directory (safetensors) that plain `from_pretrained` reloads."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        from chatforge.export import export_final

        full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            base = dist.unwrap(self.model)
            export_final(base, out_dir, tokenizer, state_dict=ckpt.share_tied(full, base))
        dist.barrier(self.info)

    def _say(self, text: str) -> None:
        if self.info.is_main:
            print(text, flush=True)
