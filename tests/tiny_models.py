"""Tiny models built from config for tests (no downloads)."""

from __future__ import annotations

import torch


def make_tiny_model(vocab_size: int = 384, seed: int = 0, **overrides):
    """A ~100k-parameter Llama built from config, float32, deterministic for a seed."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    shape = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=True, attn_implementation="sdpa",
    )
    config = LlamaConfig(**(shape | overrides))
    return LlamaForCausalLM(config)


def save_tiny_chat_model(out, tokenizer_dir, max_position_embeddings: int):
    """`out` as a model directory: a tiny random chat model (`make_tiny_model`, sized to the tokenizer at
    `tokenizer_dir`, with `max_position_embeddings` positions) saved with that tokenizer. Returns `out`."""
    from chatforge.tokenizer.load import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    make_tiny_model(vocab_size=len(tokenizer), max_position_embeddings=max_position_embeddings).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
