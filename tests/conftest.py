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


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tiny_tokenizer_dir):
    """A saved tiny chat model (random ~100k-parameter Llama, 256 positions) with the tiny tokenizer."""
    from tiny_models import save_tiny_chat_model

    return save_tiny_chat_model(tmp_path_factory.mktemp("base"), tiny_tokenizer_dir, max_position_embeddings=256)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The built-in task world's files, tiny size."""
    from chatforge.world.write import write_world

    out = tmp_path_factory.mktemp("world")
    write_world(out, size="tiny")
    return out
