"""Token sequences of different lengths as one padded batch with its attention mask."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch


def pad_sequences(
    seqs: Sequence[Sequence[int]], pad_id: int, side: Literal["right", "left"] = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both [len(seqs), longest], padded with `pad_id` on `side`.

    Right padding keeps every sequence at the positions it has alone (scoring); left padding ends
    every sequence at the last column (generation continues all rows from there).
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        span = slice(0, len(seq)) if side == "right" else slice(width - len(seq), width)
        ids[row, span] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, span] = 1
    return ids, mask
