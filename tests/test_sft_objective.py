"""SFTObjective's supervised-positions-only LM head gives the full-logits loss and gradients."""

from __future__ import annotations

import pytest
import torch

from chatforge.losses.lm import IGNORE_INDEX, weighted_token_nll_sum
from chatforge.models.logprobs import lm_forward, separable_head
from chatforge.sft.batches import Example, SFTBatches
from chatforge.sft.objective import SFTObjective
from tiny_models import make_tiny_model

VOCAB = 96


def _batch(mode: str) -> dict[str, torch.Tensor]:
    """Rows of three or four short conversations; the answers are the second half of each, one weighted 0.5."""
    gen = torch.Generator().manual_seed(1)
    examples = []
    for n, weight in ((9, 1.0), (14, 0.5), (6, 1.0), (11, 1.0)):
        ids = torch.randint(3, VOCAB, (n,), generator=gen).tolist()
        labels = [IGNORE_INDEX] * (n // 2) + ids[n // 2 :]
        examples.append(Example(ids, labels, weight))
    batches = SFTBatches(examples, batch_size=2, seq_len=24, pad_token_id=0, mode=mode, group_by_length=False)
    return batches.collate([[0, 1], [2, 3]] if mode == "pack" else [[0], [1]])


def _full(model, batch):
    logits = lm_forward(model, batch)
    return weighted_token_nll_sum(logits, batch["labels"], batch["loss_weights"])


def _supervised_only(model, batch):
    out = SFTObjective()(model, batch)
    return out.loss_sum, out.count


def _loss_and_grads(model, batch, objective):
    model.zero_grad(set_to_none=True)
    loss, count = objective(model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), int(count), grads


def _lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))


@pytest.mark.parametrize("mode", ["pack", "pad"])
@pytest.mark.parametrize("wrap", ["plain", "lora"])
def test_supervised_head_matches_full_logits(mode, wrap):
    model = make_tiny_model(vocab_size=VOCAB, seed=3)
    if wrap == "lora":
        model = _lora(model)
        for name, p in model.named_parameters():  # peft starts B at zero; move it so the adapters matter
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02)
    assert separable_head(model) is not None
    batch = _batch(mode)
    assert 0 < int((batch["labels"] != IGNORE_INDEX).sum()) < batch["labels"].numel() // 2

    fast_loss, fast_count, fast_grads = _loss_and_grads(model, batch, _supervised_only)
    full_loss, full_count, full_grads = _loss_and_grads(model, batch, _full)

    assert fast_count == full_count
    torch.testing.assert_close(fast_loss, full_loss, atol=1e-5, rtol=1e-5)
    assert fast_grads.keys() == full_grads.keys() and fast_grads
    for name in full_grads:
        torch.testing.assert_close(fast_grads[name], full_grads[name], atol=1e-5, rtol=1e-5, msg=name)


def test_batch_without_answers_gives_zero_and_a_graph():
    model = make_tiny_model(vocab_size=VOCAB, seed=3)
    batch = _batch("pad")
    batch["labels"].fill_(IGNORE_INDEX)
    out = SFTObjective()(model, batch)
    assert out.loss_sum.detach().item() == 0.0 and int(out.count) == 0
    out.loss_sum.backward()  # an all-prompt micro-batch must still backpropagate (to zero gradients)


def test_models_that_must_run_their_own_forward_take_the_full_path():
    model = make_tiny_model(vocab_size=VOCAB, seed=3)
    assert separable_head(make_tiny_model(vocab_size=VOCAB, seed=3, final_logit_softcapping=30.0)) is None
    model.compile()
    assert separable_head(model) is None
