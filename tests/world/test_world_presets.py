"""The task world's tiny presets have the shapes and parameter counts docs/world.md gives."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM

from chatforge.models.presets import PRESETS, hf_config


def by_hand(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, vocab: int) -> int:
    head = hidden // heads
    attention = hidden * head * heads * 2 + hidden * head * kv_heads * 2  # q, o; k, v
    block = attention + 3 * hidden * intermediate + 2 * hidden  # SwiGLU, two RMSNorms
    return vocab * hidden + layers * block + hidden  # tied embeddings, final norm


@pytest.mark.parametrize(("name", "expected"), [("llama-2m", 1_967_808), ("llama-3m", 3_426_560)])
def test_tiny_world_presets_parameter_counts(name, expected):
    preset = PRESETS[name]
    assert preset.hidden_size // preset.num_heads == 64
    assert by_hand(preset.hidden_size, preset.num_layers, preset.num_heads, preset.num_kv_heads,
                   preset.intermediate_size, 2048) == expected
    model = AutoModelForCausalLM.from_config(hf_config(name, 2048, {"pad_token_id": 0}, {}))
    assert sum(p.numel() for p in model.parameters()) == expected
