"""Build the model a stage trains: a from-scratch preset or any local Hugging Face causal LM."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from chatforge.atomic_dir import check_complete
from chatforge.config.base import StrictModel
from chatforge.errors import ChatforgeError, ConfigError
from chatforge.models.presets import PRESETS, hf_config
from chatforge.models.quiet import quiet_transformers_bars


class ModelConfig(StrictModel):
    preset: str | None = Field("llama-10m", description=f"from-scratch shape: {', '.join(PRESETS)}")
    path: str | None = Field(None, description="local Hugging Face causal-LM directory (overrides preset)")
    config_overrides: dict[str, Any] = Field(
        default_factory=dict, description="fields set on the transformers config, e.g. {num_key_value_heads: 1}"
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="attention kernel; sdpa = torch.nn.functional.scaled_dot_product_attention"
    )
    trust_remote_code: bool = Field(False, description="allow code shipped in a model directory to run (off unless asked)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward to save memory")

    @model_validator(mode="after")
    def _check_preset(self) -> ModelConfig:
        if self.path is None and self.preset is None:
            raise ValueError("set model.preset or model.path")
        if self.path is None and self.preset not in PRESETS:
            guess = difflib.get_close_matches(self.preset or "", list(PRESETS), n=1)
            hint = f"; did you mean {guess[0]!r}?" if guess else ""
            raise ValueError(f"unknown model.preset {self.preset!r}{hint} (known: {', '.join(PRESETS)})")
        return self


def special_token_ids(tokenizer) -> dict[str, int | None]:
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def build_model(cfg: ModelConfig, tokenizer, seed: int | None = None) -> torch.nn.Module:
    """A float32 model on CPU; the engine moves it and picks the compute precision."""
    if cfg.path is not None:
        model = load_pretrained(cfg.path, cfg)
    else:
        from transformers import AutoModelForCausalLM

        config = hf_config(cfg.preset, len(tokenizer), special_token_ids(tokenizer), cfg.config_overrides)
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or getattr(config, "num_kv_heads", None) or heads
        if heads % kv_heads or config.hidden_size % heads:
            raise ConfigError(
                f"model.config_overrides: {heads} attention heads must divide hidden_size {config.hidden_size} "
                f"and be a multiple of the {kv_heads} key/value heads"
            )
        if seed is not None:
            torch.manual_seed(seed)
        try:
            model = AutoModelForCausalLM.from_config(config, attn_implementation=cfg.attn_implementation)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model.config_overrides: {exc}") from None
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        raise ChatforgeError(
            f"tokenizer has {len(tokenizer)} tokens but the model's embedding has "
            f"{model.get_input_embeddings().num_embeddings} rows; resize with `chatforge tokenizer extend`"
        )
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def load_pretrained(path: str | Path, cfg: ModelConfig | None = None) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    path = Path(path)
    check_complete(path)  # a run's final/ must have been written to the end
    if not (path / "config.json").is_file():
        raise ChatforgeError(f"model directory {path} has no config.json (expected a Hugging Face model directory)")
    try:
        with quiet_transformers_bars():  # its "Loading weights" bar, once per load
            return AutoModelForCausalLM.from_pretrained(
                path,
                dtype=torch.float32,
                attn_implementation=cfg.attn_implementation if cfg else "sdpa",
                trust_remote_code=cfg.trust_remote_code if cfg else False,
                use_safetensors=None,
            )
    except (OSError, ValueError) as exc:
        raise ChatforgeError(f"cannot load model from {path}: {str(exc).splitlines()[0]}") from None


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: 6·N (non-embedding params) + 12·L·d·T for attention scores (PaLM, App. B)."""
    config = model.config
    # The embedding lookup costs no FLOPs but the LM head's matmul does; with tied weights the
    # head shares the embedding's storage, so the plain count already includes it exactly once.
    n_params = count_parameters(model)
    if not getattr(config, "tie_word_embeddings", False):
        n_params -= model.get_input_embeddings().weight.numel()
    layers = config.num_hidden_layers
    hidden = config.hidden_size
    return 6.0 * n_params + 12.0 * layers * hidden * seq_len
