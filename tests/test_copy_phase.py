"""examples/world/copy_phase.py: the copy drill marks exactly the tokens that only copying predicts."""

from __future__ import annotations

import pytest

from script_loader import load_script


@pytest.fixture(scope="module")
def copy_phase():
    return load_script("examples/world/copy_phase.py")


@pytest.mark.parametrize("fmt", ["hyphen", "space"])
def test_the_mask_covers_the_later_copies_minus_their_first_token_and_the_hyphens(copy_phase, tiny_tokenizer, fmt):
    drill = copy_phase.Drill(tiny_tokenizer, fmt, seed=3, min_len=4, max_len=4)
    ids, mask = drill.line()
    copy = tiny_tokenizer(drill_string := _string_like(drill, ids), add_special_tokens=False).input_ids
    n, newline = len(copy), len(drill.newline)
    assert ids == copy * 3 + drill.newline, drill_string
    hyphen = set(tiny_tokenizer("-", add_special_tokens=False).input_ids)
    expected = [False] * n + ([False] + [t not in hyphen for t in copy[1:]]) * 2 + [False] * newline
    assert mask == expected
    assert not any(mask[:n]) and any(mask[n:])  # the first copy cannot be predicted, the others can


def _string_like(drill, ids):
    return drill.tok.decode(ids[: (len(ids) - len(drill.newline)) // 3])


def test_rows_hold_whole_lines_after_bos_and_align_masks(copy_phase, tiny_tokenizer):
    drill = copy_phase.Drill(tiny_tokenizer, "space", seed=0, min_len=3, max_len=5)
    ids, mask = drill.rows(4, 32, tiny_tokenizer.bos_token_id)
    assert ids.shape == mask.shape == (4, 33)
    assert (ids[:, 0] == tiny_tokenizer.bos_token_id).all() and not mask[:, 0].any()


def test_copy_accuracy_is_one_for_a_model_that_predicts_the_next_token(copy_phase):
    import torch

    class Oracle(torch.nn.Module):  # logits put all mass on the true next token
        def __init__(self, ids):
            super().__init__()
            self.ids = ids

        def forward(self, input_ids):
            nxt = self.ids[:, 1:]
            return type("Out", (), {"logits": torch.nn.functional.one_hot(nxt, 50).float()})()

    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[:, 4:] = True
    assert copy_phase.copy_accuracy(Oracle(ids), ids, mask) == 1.0
    shifted = Oracle(torch.roll(ids, 1, dims=1))
    assert copy_phase.copy_accuracy(shifted, ids, mask) < 1.0
