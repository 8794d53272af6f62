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
whose masks it built from the attention mask alone), so `models.logprobs.check_isolation` proves it on the actual model
before a run relies on it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

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
