"""SFT rows: packing without cross-talk, shifted labels per example, padding, length grouping, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chatforge.errors import DataError
from chatforge.losses.lm import IGNORE_INDEX
from chatforge.models.logprobs import lm_forward
from chatforge.sft.batches import Example, SFTBatches, pack_rows
from tiny_models import make_tiny_model

IGN = IGNORE_INDEX


def examples(n: int = 40, seed: int = 0) -> list[Example]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        length = int(rng.integers(4, 12))
        ids = [10 + k] * length  # every token names its example
        labels = [IGN] * (length // 2) + ids[length // 2 :]  # the second half is the "answer"
        out.append(Example(ids, labels))
    return out


def test_rows_shift_labels_within_each_example_and_restart_positions():
    a = Example([5, 6, 7, 8], [IGN, IGN, 7, 8])
    b = Example([9, 10, 11], [IGN, 10, 11])
    batches = SFTBatches([a, b], batch_size=1, seq_len=10, pad_token_id=0, mode="pack", seed=0)
    batch = batches.next_batch()
    order = batch["input_ids"][0].tolist()
    first_is_a = order[0] == 5
    want_inputs = [5, 6, 7, 8, 9, 10, 11] if first_is_a else [9, 10, 11, 5, 6, 7, 8]
    want_labels = [IGN, 7, 8, IGN, 10, 11, IGN] if first_is_a else [10, 11, IGN, IGN, 7, 8, IGN]
    want_pos = [0, 1, 2, 3, 0, 1, 2] if first_is_a else [0, 1, 2, 0, 1, 2, 3]
    assert order == want_inputs + [0, 0, 0]
    assert batch["labels"][0].tolist() == want_labels + [IGN, IGN, IGN]  # the last token never predicts the next example
    assert batch["position_ids"][0].tolist() == want_pos + [0, 1, 2]  # padding is a segment of its own


def test_packed_examples_get_the_logits_they_get_alone():
    model = make_tiny_model().eval()
    data = examples(6)
    batch = SFTBatches(data, batch_size=1, seq_len=40, pad_token_id=0, mode="pack").next_batch()
    with torch.no_grad():
        packed = lm_forward(model, batch)[0]
        ids, pos = batch["input_ids"][0], batch["position_ids"][0]
        starts = [i for i in range(len(pos)) if pos[i] == 0] + [len(pos)]
        for begin, end in zip(starts, starts[1:]):
            if ids[begin] == 0:  # the padding segment
                continue
            alone = model(input_ids=ids[begin:end][None]).logits[0]
            torch.testing.assert_close(packed[begin:end], alone, rtol=1e-5, atol=1e-5)


def test_first_fit_packing_never_overflows_and_keeps_every_example():
    data = examples(50)
    rows = pack_rows(data, range(50), 16)
    assert sorted(i for row in rows for i in row) == list(range(50))
    assert all(sum(len(data[i].input_ids) for i in row) <= 16 for row in rows)


@pytest.mark.parametrize("mode", ["pack", "pad"])
def test_rows_do_not_depend_on_micro_batching_or_ranks_and_resume(mode):
    data = examples(80)
    big = SFTBatches(data, 4, 24, 0, mode, seed=3)
    small = SFTBatches(data, 1, 24, 0, mode, seed=3, rows_per_step=4)  # 4 accumulation steps
    ranks = [SFTBatches(data, 2, 24, 0, mode, seed=3, rank=r, world_size=2) for r in (0, 1)]

    def real_rows(batch):  # padding width differs by micro-batch in pad mode: compare real tokens
        return [[t for t in row.tolist() if t != 0] for row in batch["input_ids"]]

    for _ in range(12):  # crosses an epoch boundary
        want = real_rows(big.next_batch())
        assert [real_rows(small.next_batch())[0] for _ in range(4)] == want
        assert real_rows(ranks[0].next_batch()) + real_rows(ranks[1].next_batch()) == want
    state = big.state_dict()
    expected = [real_rows(big.next_batch()) for _ in range(3)]
    fresh = SFTBatches(data, 4, 24, 0, mode, seed=3)
    fresh.load_state_dict(state)
    assert [real_rows(fresh.next_batch()) for _ in range(3)] == expected


def test_length_grouping_pads_less():
    data = examples(400, seed=1)

    def padding(grouped: bool) -> int:
        b = SFTBatches(data, 8, 24, 0, "pad", seed=0, group_by_length=grouped)
        return sum(int((batch["attention_mask"] == 0).sum()) for batch in (b.next_batch() for _ in range(50)))

    assert padding(True) < 0.3 * padding(False)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(DataError, match="longer than seq_len=5"):
        SFTBatches(examples(4), 1, 5, 0)
    with pytest.raises(DataError, match="fewer than one optimizer step's 4 rows"):
        SFTBatches(examples(2), 4, 64, 0, "pad")
    state = SFTBatches(examples(10), 1, 64, 0).state_dict()
    with pytest.raises(DataError, match="same data and seed"):
        SFTBatches(examples(11), 1, 64, 0).load_state_dict(state)
