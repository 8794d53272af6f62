"""What an SFT run trains: the whole model, LoRA adapters, or the last blocks of a frozen model.

- `full`: every parameter trains.
- `lora`: `peft.get_peft_model` with a `LoraConfig(task_type="CAUSAL_LM")`; only the adapters train.
  `export_model` merges them (`merge_and_unload`) so `final/` is a plain `transformers` model.
- `full_then_lora`: the recipe's hybrid: full fine-tuning for the first `switch_fraction` of the
  steps (the model adapts fast while every weight moves), then LoRA adapters on the result for the
  rest (cheaper steps, a smaller optimizer state). One LR schedule spans both segments; the LoRA
  segment's optimizer starts fresh (its parameters are new). The stage runs the two segments.
- `freeze`: every parameter is frozen except the last `train_last_n_blocks` decoder blocks (the
  modules whose class is in the model's `_no_split_modules`, as FSDP2 shards them) and the parameters
  whose name matches one of the `train_modules` regular expressions (e.g. `lm_head`, `model\\.norm`).

The engine's optimizer and gradient clipping take only `requires_grad` parameters, so frozen ones
get no update and no AdamW state.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.errors import ConfigError

Mode = Literal["full", "lora", "freeze", "full_then_lora"]
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraSettings(StrictModel):
    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: int = Field(16, ge=1, description="LoRA alpha (the update is scaled by alpha / r)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="dropout on the LoRA input")
    target_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS), description="module names that get adapters"
    )
    save_adapter: bool = Field(
        True, description="also save the adapter alone to out/adapter/ (base referenced by absolute path)"
    )


class FullThenLoraSettings(StrictModel):
    switch_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="fraction of train.max_steps trained in full before switching to LoRA"
    )
    switch_step: int | None = Field(None, ge=1, description="switch after this step instead (overrides switch_fraction)")
    lora_lr: float | None = Field(
        None, gt=0.0, description="peak LR of the LoRA segment (default optim.lr); the schedule's shape continues"
    )

    def switch_at(self, max_steps: int) -> int:
        step = self.switch_step if self.switch_step is not None else round(self.switch_fraction * max_steps)
        if not 1 <= step < max_steps:
            raise ConfigError(
                f"full_then_lora switches after step {step}, but it must be between 1 and train.max_steps - 1 "
                f"= {max_steps - 1}: change full_then_lora.switch_fraction/switch_step or train.max_steps"
            )
        return step


class FreezeSettings(StrictModel):
    train_last_n_blocks: int | None = Field(
        None, ge=0, description="decoder blocks trained, counted from the top (None = none)"
    )
    train_modules: list[str] = Field(
        default_factory=list, description="regular expressions: parameters whose name matches one train"
    )


def decoder_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    names = getattr(model, "_no_split_modules", None) or []
    return [m for m in model.modules() if type(m).__name__ in names]


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each shared tensor counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def apply_mode(
    model: torch.nn.Module, mode: Mode, lora: LoraSettings | None = None, freeze: FreezeSettings | None = None,
    task_type: str = "CAUSAL_LM",
) -> torch.nn.Module:
    """The model to train for `mode` (a peft model for lora, the same model otherwise; full_then_lora
    starts in full). `task_type="SEQ_CLS"` (a reward model): the fresh `score` head trains in full
    next to the adapters."""
    if mode in ("full", "full_then_lora"):
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        lora = lora or LoraSettings()
        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = [t for t in lora.target_modules if t not in present]
        if missing:
            raise ConfigError(f"lora.target_modules {missing} are not modules of {type(model).__name__}")
        config = LoraConfig(
            task_type=task_type, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules), modules_to_save=["score"] if task_type == "SEQ_CLS" else None,
        )
        return get_peft_model(model, config)
    if mode == "freeze":
        freeze = freeze or FreezeSettings()
        for p in model.parameters():
            p.requires_grad_(False)
        n = freeze.train_last_n_blocks or 0
        blocks = decoder_blocks(model)
        if n > len(blocks):
            raise ConfigError(f"freeze.train_last_n_blocks={n} but {type(model).__name__} has {len(blocks)} decoder blocks")
        for block in blocks[len(blocks) - n :]:
            for p in block.parameters():
                p.requires_grad_(True)
        patterns = [re.compile(p) for p in freeze.train_modules]
        for name, p in model.named_parameters():
            if any(pat.search(name) for pat in patterns):
                p.requires_grad_(True)
        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError(
                "mode=freeze leaves nothing to train: set freeze.train_last_n_blocks and/or freeze.train_modules"
            )
        return model
    raise ConfigError(f"mode must be full, lora, freeze or full_then_lora, not {mode!r}")


def export_model(model: torch.nn.Module, mode: Mode, out_dir: Path, tokenizer=None, adapter_dir: Path | None = None) -> None:
    """Write `out_dir` as a plain `transformers` model (LoRA merged in); the adapter alone to `adapter_dir`."""
    from chatforge.export import export_final

    export_final(model, out_dir, tokenizer, adapter_dir=adapter_dir, base_trained=mode == "full_then_lora")
