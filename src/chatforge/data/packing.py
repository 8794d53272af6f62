"""Packing documents into fixed-length rows without cross-talk between them.

A training row is a window of the token stream, where documents lie back to back. With
`packing: isolated` (the default) no token may attend to, or be predicted from, another document:

- position ids restart at 0 at every document start (and at the window's first token), and the
  model receives them without an attention mask. `transformers` then derives one segment per run of
  consecutive positions and builds a block-diagonal causal mask (SDPA / eager). This needs
  `use_cache=False`: with a cache the detection is skipped. FlashAttention-2 detects packing only
  in a batch of one row, so for it the micro-batch is laid end to end as one row of varlen segments.
- the label of a document's last token (which would be the next document's first token) is ignored.

`packing: concat` is the naive mode kept for comparison: one causal mask over the whole window, so
a document sees the end of the previous one.

Not every architecture honours packed position ids (Falcon's ALiBi did not before transformers 5.25,
whose masks it built from the attention mask alone), so `check_isolation` proves it on the actual model
before a run relies on it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from chatforge.errors import ConfigError
from chatforge.losses.lm import IGNORE_INDEX

Packing = Literal["isolated", "concat"]


def window_tensors(window: np.ndarray, doc_starts: np.ndarray, start: int, packing: Packing) -> dict[str, np.ndarray]:
    """input_ids / labels (/ position_ids) of one window of `len(window) - 1` inputs.

    `window` holds the stream's tokens `[start, start + L + 1)`; `doc_starts` are the sorted absolute
    offsets where documents begin (the token cache's `.idx`).
    """
    length = len(window) - 1
    inputs = window[:-1].astype(np.int64)
    labels = window[1:].astype(np.int64)
    if packing == "concat":
        return {"input_ids": inputs, "labels": labels}
    lo, hi = np.searchsorted(doc_starts, [start + 1, start + length + 1])
    relative = doc_starts[lo:hi] - start  # document starts inside (start, start + L]
    labels = labels.copy()
    labels[relative - 1] = IGNORE_INDEX  # a document's last token does not predict the next document
    inside = relative[relative < length]
    segment = np.zeros(length, dtype=np.int64)
    segment[inside] = 1
    segment = np.cumsum(segment)
    segment_start = np.concatenate([[0], inside])[segment]
    positions = np.arange(length, dtype=np.int64) - segment_start
    return {"input_ids": inputs, "labels": labels, "position_ids": positions}


def attention_kind(model: torch.nn.Module) -> str:
    config = getattr(getattr(model, "module", model), "config", None)
    return str(getattr(config, "_attn_implementation", "") or "")


def lm_forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits for a language-modelling batch, packed (position_ids present) or not."""
    if "position_ids" not in batch:
        mask = batch.get("attention_mask")  # padded rows (SFT's pad mode)
        return model(input_ids=batch["input_ids"], attention_mask=mask, use_cache=False).logits
    if attention_kind(model).startswith("flash_attention") and batch["input_ids"].shape[0] > 1:
        # FlashAttention detects packed documents only in a batch of one row; every row starts
        # at position 0, so the rows laid end to end stay apart as variable-length segments.
        rows, length = batch["input_ids"].shape
        flat = model(input_ids=batch["input_ids"].reshape(1, -1), position_ids=batch["position_ids"].reshape(1, -1), use_cache=False)
        return flat.logits.reshape(rows, length, -1)
    # use_cache=False: with a cache, transformers skips the packed-sequence mask.
    return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits


@torch.no_grad()
def check_isolation(model: torch.nn.Module, vocab_size: int, tolerance: float = 1e-3) -> float:
    """Raise ConfigError unless a document packed after another gets the logits it gets alone.

    Runs two short random documents through the model in float32 on its device; returns the largest
    absolute logit difference seen (a few 1e-7 when isolation holds).
    """
    params = next(model.parameters())
    if attention_kind(model).startswith("flash_attention") and params.device.type == "cpu":
        return float("nan")  # FlashAttention runs on GPUs only; transformers' varlen path isolates by position ids
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(4, max(vocab_size, 5), (1, 5), generator=generator)
    second = torch.randint(4, max(vocab_size, 5), (1, 7), generator=generator)
    packed = torch.cat([first, second], dim=1).to(params.device)
    positions = torch.cat([torch.arange(5), torch.arange(7)]).unsqueeze(0).to(params.device)
    was_training = model.training
    model.eval()
    try:
        together = lm_forward(model, {"input_ids": packed, "position_ids": positions})[:, 5:].float()
        alone = lm_forward(model, {"input_ids": second.to(params.device)}).float()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"data.packing=isolated: {type(model).__name__} failed on packed position ids ({exc}); "
            "use data.packing=concat"
        ) from None
    finally:
        model.train(was_training)
    gap = (together - alone).abs().max().item()
    if not gap <= tolerance * max(1.0, alone.abs().max().item()):
        raise ConfigError(
            f"data.packing=isolated: {type(model).__name__} lets packed documents attend to each other "
            f"(logits of a packed document differ from the document alone by {gap:.3g}); its attention "
            "ignores restarted position ids (ALiBi Falcon did before transformers 5.25). Use a Llama-style model or "
            "data.packing=concat"
        )
    return gap
