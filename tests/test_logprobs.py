"""models.logprobs: answer-only log-probs equal the full forward's log-softmax, token by token."""

from __future__ import annotations

import pytest
import torch

from chatforge.losses.lm import IGNORE_INDEX
from chatforge.models.logprobs import answer_logits, lm_forward, sequence_logps, token_logps
from tiny_models import make_tiny_model

VOCAB = 64


def _batch():
    """Two right-padded rows: row 0 has 7 tokens (answer = its last 3 labels), row 1 has 5 (answer = 2)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, VOCAB, (2, 7), generator=gen)
    ids[1, 5:] = 0
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 3:6] = ids[0, 4:7]  # labels[t] is the token at t + 1
    labels[1, 2:4] = ids[1, 3:5]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("softcap", [None, 30.0])  # softcapping: not separable, the full-logits path
def test_token_and_sequence_logps_by_hand(softcap):
    model = make_tiny_model(vocab_size=VOCAB, seed=1, **({"final_logit_softcapping": softcap} if softcap else {})).eval()
    batch = _batch()
    with torch.no_grad():
        full = lm_forward(model, batch).float().log_softmax(-1)
        per_token = token_logps(model, batch)
        summed, counts = sequence_logps(model, batch)
        logits, supervised = answer_logits(model, batch)
    # by hand: log p(labels[t]) at the answer positions, 0 elsewhere
    expected = torch.zeros(2, 7)
    for row, t in zip(*torch.where(batch["labels"] != IGNORE_INDEX)):
        expected[row, t] = full[row, t, batch["labels"][row, t]]
    torch.testing.assert_close(per_token, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(summed, expected.sum(1), atol=1e-5, rtol=1e-5)
    assert counts.tolist() == [3, 2] and supervised.sum().item() == 5 and logits.shape == (5, VOCAB)
    assert (per_token[batch["labels"] == IGNORE_INDEX] == 0).all()
