"""Training rows for SFT: conversations packed without cross-talk, or one per row with padding.

Examples carry unshifted labels (`labels[t]` is `input_ids[t]` where supervised, IGNORE_INDEX
elsewhere), as `masking.encode_conversation` returns them. Rows carry *shifted* labels, the engine's
convention (`labels[t]` is the target of position `t`), built per example so that an example's last
position never predicts the next example's first token.

- `pack`: each epoch shuffles the examples (seeded by (seed, epoch)) and lays them into rows of
  `seq_len` tokens first-fit in that order, starting a row when the next example does not fit; the
  rest of a row is padding. Position ids restart at 0 for every example, so with the foundation's
  packing (`models.logprobs.lm_forward`) no example attends to another.
- `pad`: one example per row, right-padded to the longest row of the micro-batch (with an attention
  mask). `group_by_length` sorts examples by length within windows of `group_window` steps (then
  shuffles the steps), so a micro-batch holds similar lengths and pads little.

The rows of a step depend only on (seed, epoch, row index), never on the micro-batch split or the
number of ranks (given the same `rows_per_step`): rank r takes rows [r*B, (r+1)*B) of each global
micro-batch of B*W rows. The state is (epoch, position in rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from chatforge.errors import DataError
from chatforge.losses.lm import IGNORE_INDEX

Mode = Literal["pack", "pad"]


class Example:
    __slots__ = ("input_ids", "labels", "weight")

    def __init__(self, input_ids: Sequence[int], labels: Sequence[int], weight: float = 1.0):
        if len(input_ids) != len(labels):
            raise ValueError("input_ids and labels must have the same length")
        self.input_ids, self.labels, self.weight = list(input_ids), list(labels), weight


def shifted(example: Example) -> tuple[list[int], list[int]]:
    """(inputs, targets) of one example: targets[t] = labels[t + 1]; the last position has none."""
    return example.input_ids, example.labels[1:] + [IGNORE_INDEX]


def pack_rows(examples: Sequence[Example], order: Sequence[int], seq_len: int) -> list[list[int]]:
    """Example indices per row: in `order`, first fit into the current row, else a new row."""
    rows: list[list[int]] = []
    used = seq_len  # force a new row for the first example
    for i in order:
        n = len(examples[i].input_ids)
        if used + n > seq_len:
            rows.append([])
            used = 0
        rows[-1].append(int(i))
        used += n
    return rows


class SFTBatches:
    """Micro-batches of SFT rows (Batches protocol: next_batch, state_dict, load_state_dict)."""

    def __init__(
        self,
        examples: Sequence[Example],
        batch_size: int,
        seq_len: int,
        pad_token_id: int,
        mode: Mode = "pack",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        group_by_length: bool = True,
        group_window: int = 64,
        rows_per_step: int | None = None,
    ):
        if not examples:
            raise DataError("no SFT examples to train on")
        too_long = [i for i, e in enumerate(examples) if len(e.input_ids) > seq_len]
        if too_long:
            raise DataError(f"{len(too_long)} examples are longer than seq_len={seq_len}; truncate them when encoding")
        self.examples, self.batch_size, self.seq_len, self.pad = list(examples), batch_size, seq_len, pad_token_id
        self.mode, self.seed, self.rank, self.world_size = mode, seed, rank, world_size
        self.group_by_length, self.group_window = group_by_length, group_window
        # Rows of one optimizer step (micro x accumulation x ranks): the unit of grouping and of the
        # dropped tail, so that splitting a step differently never changes its rows.
        self.rows_per_step = rows_per_step or batch_size * world_size
        if self.rows_per_step % (batch_size * world_size):
            raise ValueError("rows_per_step must be a multiple of batch_size * world_size")
        self.epoch, self.position = 0, 0
        self._rows = self._layout(0)

    # ---- layout of one epoch -----------------------------------------------------------------
    def _layout(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.examples))
        if self.mode == "pack":
            rows = pack_rows(self.examples, order, self.seq_len)
        elif self.group_by_length:
            rows = self._grouped(order, rng)
        else:
            rows = [[int(i)] for i in order]
        step = self.rows_per_step
        if len(rows) < step:
            raise DataError(
                f"one epoch gives {len(rows)} rows, fewer than one optimizer step's {step} rows "
                "(micro_batch_size x grad_accum_steps x ranks); add data or lower the batch size"
            )
        return rows[: len(rows) - len(rows) % step]  # drop the ragged tail, like the LM stream

    def _grouped(self, order: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
        """Sort by length inside windows of steps, then shuffle whole steps."""
        step = self.rows_per_step
        window = step * self.group_window
        batches = []
        for begin in range(0, len(order), window):
            chunk = sorted(order[begin : begin + window], key=lambda i: -len(self.examples[i].input_ids))
            batches += [chunk[j : j + step] for j in range(0, len(chunk), step)]
        rng.shuffle(batches)
        return [[int(i)] for batch in batches for i in batch]

    # ---- batches ------------------------------------------------------------------------------
    def next_batch(self) -> dict[str, torch.Tensor]:
        global_batch = self.batch_size * self.world_size
        if self.position + global_batch > len(self._rows):
            self.epoch += 1
            self.position = 0
            self._rows = self._layout(self.epoch)
        start = self.position + self.rank * self.batch_size
        mine = self._rows[start : start + self.batch_size]
        self.position += global_batch
        return self.collate(mine)

    def take(self, n: int) -> list[list[int]]:
        """The next `n` rows of the run over all processes (a new epoch's layout when one runs out),
        for a caller that interleaves other rows (`sft.mixing`); `collate` turns rows into a batch."""
        rows: list[list[int]] = []
        while len(rows) < n:
            if self.position >= len(self._rows):
                self.epoch, self.position = self.epoch + 1, 0
                self._rows = self._layout(self.epoch)
            k = min(n - len(rows), len(self._rows) - self.position)
            rows += self._rows[self.position : self.position + k]
            self.position += k
        return rows

    def collate(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        """The batch of `rows` (each a list of example indices), in this object's mode."""
        width = self.seq_len if self.mode == "pack" else max(sum(len(self.examples[i].input_ids) for i in r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        weights = torch.zeros((len(rows), width), dtype=torch.float32)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                inputs, targets = shifted(self.examples[i])
                n = len(inputs)
                input_ids[r, at : at + n] = torch.tensor(inputs)
                labels[r, at : at + n] = torch.tensor(targets)
                weights[r, at : at + n] = self.examples[i].weight
                positions[r, at : at + n] = torch.arange(n)
                mask[r, at : at + n] = 1
                at += n
            if self.mode == "pack" and at < width:
                # Padding continues counting from the last example: it forms one more segment of its
                # own that nothing real attends to, and its labels are ignored.
                positions[r, at:] = torch.arange(width - at)
        batch = {"input_ids": input_ids, "labels": labels, "loss_weights": weights}
        if self.mode == "pack":
            batch["position_ids"] = positions
        else:
            batch["attention_mask"] = mask
        return batch

    def in_order(self, batch_size: int):
        """Every example once, in order (packed or one per row), for a validation loss."""
        n = len(self.examples)
        rows = pack_rows(self.examples, range(n), self.seq_len) if self.mode == "pack" else [[i] for i in range(n)]
        for start in range(0, len(rows), batch_size):
            yield self.collate(rows[start : start + batch_size])

    # ---- state --------------------------------------------------------------------------------
    def rows_per_epoch(self) -> int:
        return len(self._rows)

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch, "position": self.position, "examples": len(self.examples), "seed": self.seed,
            "rows_per_step": self.rows_per_step,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("rows_per_step") != self.rows_per_step:
            raise DataError(
                f"the checkpoint's steps had {state.get('rows_per_step')} rows but this run has {self.rows_per_step}; "
                "resume with the same global batch"
            )
        if state.get("examples") != len(self.examples) or state.get("seed") != self.seed:
            raise DataError(
                f"the checkpoint's SFT data had {state.get('examples')} examples (seed {state.get('seed')}) but this run "
                f"has {len(self.examples)} (seed {self.seed}); resume with the same data and seed"
            )
        self.epoch, self.position = state["epoch"], state["position"]
        self._rows = self._layout(self.epoch)
