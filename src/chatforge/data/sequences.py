"""Fixed-length training sequences cut from a token stream, in a seeded order that can resume.

The stream is cut into windows of `seq_len + 1` tokens with stride `seq_len`, so every token but
the first is a target exactly once per epoch. Each epoch visits the windows in a fresh permutation
drawn from (seed, epoch). The order depends only on the window index, never on the batch size,
so micro-batch 1 x 8 accumulation steps sees exactly the sequences of one batch of 8.
"""

from __future__ import annotations

import numpy as np
import torch

from chatforge.errors import DataError


class SequenceStream:
    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.tokens = tokens
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_windows = (len(tokens) - 1) // seq_len if len(tokens) > 1 else 0
        if self.num_windows < batch_size * world_size:
            raise DataError(
                f"the corpus has {len(tokens):,} tokens = {self.num_windows} sequences of {seq_len}, fewer than one "
                f"global batch ({batch_size} x {world_size} ranks); add data or lower data.seq_len / batch size"
            )
        self.epoch = 0
        self.position = 0  # windows consumed in this epoch, across all ranks
        self._order = self._permutation(self.epoch)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_windows)

    def _window(self, index: int) -> np.ndarray:
        start = int(index) * self.seq_len
        return np.asarray(self.tokens[start : start + self.seq_len + 1], dtype=np.int64)

    def next_batch(self) -> dict[str, torch.Tensor]:
        """This rank's `batch_size` windows of the next global batch, as input_ids/labels."""
        per_step = self.batch_size * self.world_size
        if self.position + per_step > self.num_windows:  # drop the ragged tail, start a new epoch
            self.epoch += 1
            self.position = 0
            self._order = self._permutation(self.epoch)
        mine = self._order[self.position + self.rank * self.batch_size : self.position + (self.rank + 1) * self.batch_size]
        self.position += per_step
        windows = torch.from_numpy(np.stack([self._window(i) for i in mine]))
        return {"input_ids": windows[:, :-1].contiguous(), "labels": windows[:, 1:].contiguous()}

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "num_windows": self.num_windows}

    def load_state_dict(self, state: dict) -> None:
        if state["num_windows"] != self.num_windows:
            raise DataError(
                f"the checkpoint's data had {state['num_windows']} sequences but the current data has "
                f"{self.num_windows}; resume with the same data and data.seq_len"
            )
        self.epoch, self.position, self.seed = state["epoch"], state["position"], state["seed"]
        self._order = self._permutation(self.epoch)

    def epochs_float(self) -> float:
        return self.epoch + self.position / max(self.num_windows, 1)


def eval_windows(tokens: np.ndarray, seq_len: int, batch_size: int, max_batches: int | None = None):
    """Non-overlapping windows over a held-out stream, in order, for a cheap validation loss."""
    n = (len(tokens) - 1) // seq_len
    if max_batches is not None:
        n = min(n, max_batches * batch_size)
    for begin in range(0, n, batch_size):
        idx = range(begin, min(begin + batch_size, n))
        windows = torch.from_numpy(
            np.stack([np.asarray(tokens[i * seq_len : i * seq_len + seq_len + 1], dtype=np.int64) for i in idx])
        )
        yield {"input_ids": windows[:, :-1].contiguous(), "labels": windows[:, 1:].contiguous()}
