"""Named from-scratch model shapes.

Llama-style presets (RoPE, RMSNorm, SwiGLU; grouped-query attention through `num_key_value_heads`)
from ~1M parameters (tests) to ~1B (GPUs), and an ALiBi preset through Falcon, the `transformers`
architecture whose ALiBi path runs on PyTorch SDPA (Bloom and MPT have ALiBi but no SDPA path).
Parameter counts below are for a vocabulary of 8192 with tied embeddings unless stated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    family: str  # "llama" or "falcon-alibi"
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool = True
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    # ~1.3M: unit tests; 2 kv heads for 4 query heads exercises GQA.
    "llama-1m": Preset("llama", 128, 4, 4, 2, 352, 512, note="tests"),
    # The task world's tiny shapes (docs/world.md, "Presets"): a 1-2k vocabulary keeps the
    # embeddings a small share, and 4 layers of width 192-256 train at several thousand tokens/s on
    # 2 CPU cores. Head size 64 in both.
    "llama-2m": Preset("llama", 192, 4, 3, 1, 512, 512, note="task world, fastest"),
    "llama-3m": Preset("llama", 256, 4, 4, 2, 688, 512, note="task world default"),
    # ~10M: the CPU demo; trains at a few thousand tokens/s on 2 cores.
    "llama-10m": Preset("llama", 320, 6, 8, 4, 864, 1024, note="CPU demo"),
    # ~125M with a 32k vocabulary (GPT-2-small scale), untied embeddings.
    "llama-125m": Preset("llama", 768, 12, 12, 4, 2048, 2048, tie_word_embeddings=False, note="GPU"),
    # ~1.1B with a 32k vocabulary (TinyLlama shape).
    "llama-1b": Preset("llama", 2048, 22, 32, 4, 5632, 2048, tie_word_embeddings=False, note="GPU"),
    # Multi-query attention variant of the demo size.
    "llama-10m-mqa": Preset("llama", 320, 6, 8, 1, 864, 1024, note="MQA"),
    # ALiBi (no position embeddings; extrapolates past the training length), multi-query attention.
    "falcon-alibi-10m": Preset("falcon-alibi", 320, 6, 8, 1, 1280, 2048, note="ALiBi via Falcon"),
    "falcon-alibi-1m": Preset("falcon-alibi", 128, 4, 4, 1, 512, 512, note="ALiBi tests"),
}


def _override_fields(config_class) -> set[str]:
    """The keys a config takes as input. transformers >= 5.2x configs are dataclasses whose `to_dict()`
    also lists attributes derived in `__post_init__` (FalconConfig's `num_key_value_heads` is computed
    from `num_kv_heads` and `multi_query`, so an override of it would be silently overwritten); only the
    declared fields count. Older configs are plain classes: their `to_dict()` keys are the inputs."""
    import dataclasses

    if dataclasses.is_dataclass(config_class):
        return {field.name for field in dataclasses.fields(config_class)}
    return set(config_class().to_dict())


def _check_overrides(config_class, overrides: dict[str, Any]) -> None:
    """transformers configs keep unknown keys as attributes, so a typo would silently change nothing."""
    import difflib

    from chatforge.errors import ConfigError

    known = _override_fields(config_class)
    for key, value in overrides.items():
        if key not in known:
            hint = difflib.get_close_matches(str(key), sorted(known), n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            colon = " (write `key: value` with a space after the colon)" if ":" in str(key) else ""
            raise ConfigError(f"model.config_overrides: {config_class.__name__} has no field {key!r}{extra}{colon}")
        if value is None:
            raise ConfigError(f"model.config_overrides: {key} is null; give it a value or leave it out")


def hf_config(preset_name: str, vocab_size: int, special_ids: dict[str, int | None], overrides: dict[str, Any]):
    """The `transformers` config of a preset, with the tokenizer's vocabulary and special ids."""
    from transformers import FalconConfig, LlamaConfig

    preset = PRESETS[preset_name]
    ids = {k: v for k, v in special_ids.items() if v is not None}
    _check_overrides(FalconConfig if preset.family == "falcon-alibi" else LlamaConfig, overrides)
    if preset.family == "llama":
        kwargs: dict[str, Any] = dict(
            vocab_size=vocab_size,
            hidden_size=preset.hidden_size,
            intermediate_size=preset.intermediate_size,
            num_hidden_layers=preset.num_layers,
            num_attention_heads=preset.num_heads,
            num_key_value_heads=preset.num_kv_heads,
            max_position_embeddings=preset.max_position_embeddings,
            hidden_act="silu",
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            tie_word_embeddings=preset.tie_word_embeddings,
            attention_bias=False,
            mlp_bias=False,
            **ids,
        )
        kwargs.update(overrides)
        return LlamaConfig(**kwargs)
    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=preset.hidden_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        num_kv_heads=preset.num_kv_heads,
        ffn_hidden_size=preset.intermediate_size,
        alibi=True,
        new_decoder_architecture=False,
        multi_query=preset.num_kv_heads == 1,
        parallel_attn=True,
        bias=False,
        max_position_embeddings=preset.max_position_embeddings,
        tie_word_embeddings=preset.tie_word_embeddings,
        **ids,
    )
    kwargs.update(overrides)
    return FalconConfig(**kwargs)
