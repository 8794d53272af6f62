"""Pretraining text mixed into SFT, row by row (the recipe's remedy for SFT forgetting general text).

`data.pretrain_mix: {sources, fraction}` makes a `fraction` of the training rows pretraining windows
instead of SFT rows. The pretraining side is the foundation's: the same token caches, `SourceWindows`
order and source weights as `chatforge pretrain` (`chatforge.data.lm_data`); every token of a window
is supervised, weighted by `loss_weight` against an answer token's 1. Which rows are pretraining is
drawn as the mixture stream draws sources: row k of optimizer step s is a pretraining row when a
uniform number seeded by (seed, s) falls below `fraction`. So the rows of a step do not depend on the
micro-batch size, accumulation or the number of processes, and a resumed run continues exactly.

The shares are of rows, not tokens: a pretraining window is `seq_len` supervised tokens, an SFT row
(packed) holds far fewer answer tokens, so a small row fraction is already a large share of the loss;
the run logs both kinds' losses (`loss/sft`, `loss/pretrain`) and reports the observed row share.
In `pack` mode windows keep documents apart (isolated packing); in `pad` mode a window is one causal
row (`concat`), as rows there carry an attention mask instead of restarted positions.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.data.corpus import SourceConfig
from chatforge.losses.lm import IGNORE_INDEX

_ROW_KIND_DRAW = 0x707478  # separates this draw from the mixture's source draw and window orders
SFT_ROW, PRETRAIN_ROW = 0, 1


class PretrainMix(StrictModel):
    sources: list[SourceConfig] = Field(description="pretraining corpora (each source's `weight` is its share among them)")
    fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of training rows that are pretraining windows")
    loss_weight: float = Field(1.0, gt=0.0, description="weight of a pretraining token's loss (an answer token's is 1)")
    cache_dir: str = Field("runs/.cache/tokens", description="token caches, shared with chatforge pretrain")


def prepare_pretrain_windows(mix: PretrainMix, tokenizer, seq_len: int, sft_packing: str, rejects, seed: int, max_steps: int, log=print):
    """The `LMData` of `mix.sources` cut into windows of `seq_len` tokens (no held-out split)."""
    from chatforge.data.lm_data import DataConfig, prepare_lm_data

    data = DataConfig(
        sources=mix.sources, seq_len=seq_len, packing="isolated" if sft_packing == "pack" else "concat",
        val_fraction=0.0, cache_dir=mix.cache_dir,
    )
    return prepare_lm_data(data, tokenizer, rejects, seed, max_steps, {}, log)


class SFTWithPretraining:
    """Micro-batches of SFT rows with pretraining windows mixed in (Batches protocol)."""

    def __init__(self, sft, windows, mix: PretrainMix, seed: int = 0):
        """`sft`: an `SFTBatches`; `windows`: a `MixtureStream` of one row per call over the pretraining
        sources (`LMData.stream(1, 1, seed)`): every process draws every row and keeps its own."""
        self.sft, self.windows, self.mix, self.seed = sft, windows, mix, seed
        self.batch_size, self.rank, self.world_size = sft.batch_size, sft.rank, sft.world_size
        self.rows_per_step = sft.rows_per_step
        self.rows = 0  # rows drawn so far over all processes
        self.pretrain_rows = 0
        self._draw_step, self._uniforms = -1, np.zeros(0)

    def is_pretraining(self, row: int) -> bool:
        step, k = divmod(row, self.rows_per_step)
        if step != self._draw_step:
            self._draw_step = step
            self._uniforms = np.random.default_rng([self.seed, _ROW_KIND_DRAW, step]).random(self.rows_per_step)
        return bool(self._uniforms[k] < self.mix.fraction)

    def next_batch(self) -> dict[str, torch.Tensor]:
        total = self.batch_size * self.world_size
        kinds = [self.is_pretraining(self.rows + offset) for offset in range(total)]
        sft_rows = iter(self.sft.take(total - sum(kinds)))
        mine = range(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        conversations, windows = [], []
        for offset, pretraining in enumerate(kinds):
            row = self.windows.next_batch() if pretraining else next(sft_rows)
            if offset in mine:
                (windows if pretraining else conversations).append(row)
        self.rows += total
        self.pretrain_rows += sum(kinds)
        return self._collate(conversations, windows)

    def _collate(self, conversations: list[list[int]], windows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        rows: list[dict[str, torch.Tensor]] = []
        if conversations:
            batch = self.sft.collate(conversations)
            rows += [{k: v[i] for k, v in batch.items()} for i in range(len(conversations))]
        for window in windows:
            row = {k: v[0] for k, v in window.items() if k != "source"}
            row["loss_weights"] = (row["labels"] != IGNORE_INDEX).float() * self.mix.loss_weight
            if self.sft.mode == "pad":
                row["attention_mask"] = torch.ones_like(row["input_ids"])
            rows.append(row)
        width = max(len(r["input_ids"]) for r in rows)
        fill = {"input_ids": self.sft.pad, "labels": IGNORE_INDEX, "loss_weights": 0.0, "attention_mask": 0}
        out = {}
        for key in rows[0]:
            padded = []
            for r in rows:
                value, short = r[key], width - len(r[key])
                if short and key == "position_ids":  # padding counts on as one more segment (SFTBatches)
                    value = torch.cat([value, torch.arange(short, dtype=value.dtype)])
                elif short:
                    value = torch.cat([value, torch.full((short,), fill[key], dtype=value.dtype)])
                padded.append(value)
            out[key] = torch.stack(padded)
        out["row_kind"] = torch.tensor([SFT_ROW] * len(conversations) + [PRETRAIN_ROW] * len(windows), dtype=torch.int64)
        return out

    def observed_share(self) -> float:
        return self.pretrain_rows / self.rows if self.rows else 0.0

    def state_dict(self) -> dict:
        return {
            "rows": self.rows, "pretrain_rows": self.pretrain_rows, "fraction": self.mix.fraction,
            "sft": self.sft.state_dict(), "windows": self.windows.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        from chatforge.errors import DataError

        if "windows" not in state or state.get("fraction") != self.mix.fraction:
            raise DataError(
                "the checkpoint was trained with another data.pretrain_mix (or none); resume with the same settings"
            )
        self.sft.load_state_dict(state["sft"])
        self.windows.load_state_dict(state["windows"])
        self.rows, self.pretrain_rows = state["rows"], state["pretrain_rows"]
