"""Pretraining windows mixed into SFT rows: shares, layout independence, weights, resume, the stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from chatforge.data.corpus import SourceConfig
from chatforge.data.mixture import MixtureStream, SourceWindows, plan_mixture
from chatforge.losses.lm import IGNORE_INDEX
from chatforge.sft.batches import SFTBatches
from chatforge.sft.mixing import PRETRAIN_ROW, SFT_ROW, PretrainMix, SFTWithPretraining
from test_sft_batches import examples

SEQ = 32


def windows(seed: int = 0) -> MixtureStream:
    tokens = np.arange(5000, dtype=np.int64) % 300 + 10  # one long "document" stream
    starts = np.arange(0, 5000, 97, dtype=np.int64)
    source = SourceWindows("web", tokens, starts, SEQ, seed, 0)
    plan = plan_mixture([SourceConfig(path="web.jsonl", name="web")], None, [], 100, {})
    return MixtureStream([source], plan, 1, 1, seed)


def mixed(batch: int, mode: str = "pack", fraction: float = 0.25, rank: int = 0, world_size: int = 1, step_rows: int = 8,
          loss_weight: float = 1.0) -> SFTWithPretraining:
    sft = SFTBatches(examples(), batch, SEQ, 0, mode, seed=3, rank=rank, world_size=world_size, rows_per_step=step_rows)
    mix = PretrainMix(sources=[SourceConfig(path="web.jsonl")], fraction=fraction, loss_weight=loss_weight)
    return SFTWithPretraining(sft, windows(), mix, seed=3)


def rows_of(batches: list[dict]) -> list[tuple]:
    """Each row as (kind, input ids without padding), in the order the batches hold them."""
    out = []
    for b in batches:
        for i in range(len(b["input_ids"])):
            keep = b["loss_weights"][i] > 0
            out.append((int(b["row_kind"][i]), tuple(b["input_ids"][i][: int(keep.nonzero().max()) + 1].tolist())))
    return out


def test_share_of_pretraining_rows_follows_the_fraction():
    stream = mixed(8, fraction=0.25)
    kinds = torch.cat([stream.next_batch()["row_kind"] for _ in range(250)])  # 2,000 rows
    share = (kinds == PRETRAIN_ROW).float().mean().item()
    assert abs(share - 0.25) < 3 * (0.25 * 0.75 / 2000) ** 0.5
    assert stream.observed_share() == pytest.approx(share)


def test_rows_of_a_step_do_not_depend_on_micro_batches_or_processes():
    one = mixed(8)
    reference = sorted(rows_of([one.next_batch() for _ in range(6)]))
    accum = mixed(2)
    split = sorted(rows_of([accum.next_batch() for _ in range(24)]))
    ranks = [mixed(2, rank=r, world_size=2) for r in (0, 1)]
    across = sorted(rows_of([s.next_batch() for _ in range(12) for s in ranks]))
    assert reference == split == across
    assert {k for k, _ in reference} == {SFT_ROW, PRETRAIN_ROW}


@pytest.mark.parametrize("mode", ["pack", "pad"])
def test_pretraining_rows_supervise_every_token_with_their_weight(mode):
    stream = mixed(8, mode=mode, fraction=0.5, loss_weight=0.3)
    batch = next(b for b in (stream.next_batch() for _ in range(10)) if (b["row_kind"] == PRETRAIN_ROW).any())
    lm = batch["row_kind"] == PRETRAIN_ROW
    labels, weights = batch["labels"][lm], batch["loss_weights"][lm]
    assert torch.equal(weights, (labels != IGNORE_INDEX).float() * 0.3)
    assert (labels[:, :SEQ] != IGNORE_INDEX).float().mean() > 0.9  # all but document ends
    # A window's labels are its inputs shifted by one.
    ids = batch["input_ids"][lm]
    inside = labels[:, :-1] != IGNORE_INDEX
    assert torch.equal(labels[:, :-1][inside], ids[:, 1:][inside])
    if mode == "pad":
        assert "position_ids" not in batch and batch["attention_mask"][lm].all()
    else:
        assert "attention_mask" not in batch and batch["input_ids"].shape[1] == SEQ


def test_resume_continues_the_same_rows():
    straight = mixed(4)
    expected = [straight.next_batch() for _ in range(10)]
    first = mixed(4)
    for _ in range(4):
        first.next_batch()
    resumed = mixed(4)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    for want in expected[4:]:
        got = resumed.next_batch()
        assert all(torch.equal(got[k], want[k]) for k in want)

