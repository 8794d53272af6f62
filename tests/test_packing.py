"""Packing without cross-talk: a document packed after another gets exactly the logits it gets alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chatforge.data.packing import window_tensors
from chatforge.errors import ConfigError
from chatforge.losses.lm import IGNORE_INDEX
from chatforge.models.logprobs import check_isolation, lm_forward
from tiny_models import make_tiny_model

# Three documents back to back, as the token cache stores them: starts at 0, 5 and 12.
STREAM = np.array([2, 10, 11, 12, 3, 2, 20, 21, 22, 23, 24, 3, 2, 30, 31, 32, 3], dtype=np.uint16)
STARTS = np.array([0, 5, 12, 17], dtype=np.int64)


def test_positions_restart_at_every_document_and_at_the_window():
    row = window_tensors(STREAM[0:17], STARTS, 0, "isolated")
    assert row["position_ids"].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3]
    # A window starting inside document 2 counts from 0 there.
    row = window_tensors(STREAM[7:15], STARTS, 7, "isolated")
    assert row["position_ids"].tolist() == [0, 1, 2, 3, 4, 0, 1]


def test_labels_never_predict_the_next_document():
    row = window_tensors(STREAM[0:17], STARTS, 0, "isolated")
    labels = row["labels"].tolist()
    # Position 4 (eos of doc 1) would predict doc 2's bos, position 11 doc 3's bos: both ignored.
    assert labels[4] == IGNORE_INDEX and labels[11] == IGNORE_INDEX
    assert [x for x in labels if x != IGNORE_INDEX] == [10, 11, 12, 3, 20, 21, 22, 23, 24, 3, 30, 31, 32, 3]
    # A window whose label position lands on a document start (offset 12 = start + 5) ignores it too.
    assert window_tensors(STREAM[7:13], STARTS, 7, "isolated")["labels"].tolist() == [22, 23, 24, 3, IGNORE_INDEX]


def test_concat_mode_is_plain_next_token():
    row = window_tensors(STREAM[0:9], STARTS, 0, "concat")
    assert set(row) == {"input_ids", "labels"}
    assert row["labels"].tolist() == STREAM[1:9].tolist() and row["input_ids"].tolist() == STREAM[0:8].tolist()


def test_packed_document_logits_equal_the_document_alone_token_by_token():
    model = make_tiny_model().eval()
    row = window_tensors(STREAM, STARTS, 0, "isolated")
    batch = {k: torch.from_numpy(v)[None] for k, v in row.items()}
    with torch.no_grad():
        packed = lm_forward(model, batch)[0]
        for begin, end in zip(STARTS[:-1], STARTS[1:]):
            end = min(end, len(STREAM) - 1)
            alone = model(input_ids=torch.from_numpy(STREAM[begin:end].astype(np.int64))[None]).logits[0]
            torch.testing.assert_close(packed[begin:end], alone, rtol=1e-5, atol=1e-5)
        # The naive mode really does leak: document 2's logits change with document 1 in front.
        leaked = model(input_ids=batch["input_ids"]).logits[0, 5:12]
        alone = model(input_ids=torch.from_numpy(STREAM[5:12].astype(np.int64))[None]).logits[0]
        assert (leaked - alone).abs().max() > 1e-3


class _IgnoresPositions(torch.nn.Module):
    """A real model whose forward drops the position ids, as an architecture that never reads them would:
    packed documents then share one causal mask and attend to each other."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, **kwargs):
        kwargs.pop("position_ids", None)
        return self.inner(**kwargs)


def test_isolation_check_accepts_llama_and_rejects_a_model_that_ignores_positions():
    assert check_isolation(make_tiny_model(), 384) < 1e-4
    with pytest.raises(ConfigError, match="packing=concat"):
        check_isolation(_IgnoresPositions(make_tiny_model()), 384)


def test_isolation_check_measures_alibi_falcon_on_the_installed_transformers():
    """Falcon's ALiBi bias depends only on key-query distance, so it isolates exactly when the mask is block
    diagonal. transformers up to 5.23 built Falcon's mask from the attention mask alone (packing leaked and
    the check refused it); the locked 5.25 derives block-diagonal masks from restarting position ids for
    Falcon too, and the check now measures isolation (a gap of a few 1e-7)."""
    from transformers import AutoModelForCausalLM

    from chatforge.models.build import hf_config

    ids = {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}
    falcon = AutoModelForCausalLM.from_config(hf_config("falcon-alibi-1m", 384, ids, {}), attn_implementation="sdpa")
    assert check_isolation(falcon, 384) < 1e-4


class _FlashLabelled(torch.nn.Module):
    """A real SDPA model whose config claims FlashAttention-2, to exercise the one-row layout."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = type("Cfg", (), {"_attn_implementation": "flash_attention_2"})()
        self.shapes = []

    def forward(self, **kwargs):
        self.shapes.append(tuple(kwargs["input_ids"].shape))
        return self.inner(**kwargs)


def test_flash_attention_batches_are_laid_end_to_end_with_the_same_logits():
    model = make_tiny_model().eval()
    rows = [window_tensors(STREAM[i : i + 9], STARTS, i, "isolated") for i in (0, 8)]
    batch = {k: torch.from_numpy(np.stack([r[k] for r in rows])) for k in rows[0]}
    flash = _FlashLabelled(model)
    with torch.no_grad():
        flat = lm_forward(flash, batch)
        plain = lm_forward(model, batch)
    assert flash.shapes == [(1, 16)] and flat.shape == plain.shape
    torch.testing.assert_close(flat, plain, rtol=1e-5, atol=1e-5)
