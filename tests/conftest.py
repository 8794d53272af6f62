"""Shared fixtures: a tiny tokenizer and tiny models built from config (no downloads)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    from chatforge.run_dir import RejectLog
    from chatforge.tokenizer.train import TokenizerConfig, save_tokenizer, train_tokenizer

    out = tmp_path_factory.mktemp("tok")
    cfg = TokenizerConfig(vocab_size=384, max_documents=60, out=str(out))
    save_tokenizer(train_tokenizer(cfg, RejectLog(None)), out)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    from chatforge.tokenizer.load import load_tokenizer

    return load_tokenizer(tiny_tokenizer_dir)


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
