"""The engine's own configs: how to optimise and how to run the loop (not what to train on)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from chatforge.config.base import StrictModel


class OptimConfig(StrictModel):
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.1, ge=0, description="AdamW decoupled weight decay (matrices only)")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1")
    beta2: float = Field(0.95, ge=0, lt=1, description="AdamW beta2")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    max_grad_norm: float = Field(1.0, ge=0, description="clip the global gradient norm to this (0 = no clipping)")
    implementation: Literal["auto", "fused", "foreach", "single"] = Field(
        "auto", description="AdamW kernel: auto = fused where the device supports it, else foreach"
    )


class TrainConfig(StrictModel):
    max_steps: int = Field(200, ge=1, description="optimizer steps in this run")
    micro_batch_size: int = Field(8, ge=1, description="sequences per forward/backward on each rank")
    grad_accum_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    seed: int = Field(1234, description="seed for model init, data order and dropout")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto = bf16 autocast on CUDA, fp32 on CPU"
    )
    compile: bool = Field(False, description="wrap the model in torch.compile")
    deterministic: bool = Field(False, description="torch.use_deterministic_algorithms (slower; bitwise repeatable)")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    distributed: Literal["ddp", "fsdp2"] = Field("ddp", description="data parallelism used under torchrun")
    log_every: int = Field(1, ge=1, description="write metrics every N steps")
    eval_every: int = Field(50, ge=0, description="evaluate every N steps (0 = only at the end)")
    eval_at_start: bool = Field(False, description="also evaluate before the first step (a baseline for the curves)")
    save_every: int = Field(100, ge=0, description="checkpoint every N steps (0 = only at the end)")
    keep_last: int = Field(2, ge=1, description="checkpoints to keep")
    resume: Literal["auto", "never", "must"] = Field(
        "auto", description="auto = resume from the run's latest checkpoint if there is one"
    )
    progress: bool = Field(True, description="show a progress bar with tokens/s and ETA")
    report_to: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list, description="extra loggers besides metrics.jsonl"
    )
    peak_tflops: float | None = Field(
        None, gt=0, description="hardware peak for the MFU estimate; default: known GPU table, or measured on CPU"
    )
