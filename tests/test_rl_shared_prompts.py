"""The RL forward with each distinct prompt run once (rl/shared_prompts.py) gives the plain forward's
log-probs, entropies and parameter gradients (up to float rounding: other matrix shapes), runs each
prompt through the decoder once, and steps aside where its layout assumptions do not hold."""

from __future__ import annotations

import pytest
import torch

from chatforge.rl.forward import response_outputs
from chatforge.rl.shared_prompts import shared_prompt_states
from tiny_models import make_tiny_model

VOCAB = 97


def _rows(groups: list[tuple[list[int], list[int]]], order: list[int] | None = None):
    """(input_ids, attention_mask, action_mask) in rl/rollout.py's layout, [prompt][response][padding],
    for (prompt, response) pairs, in `order` (micro-batches serve rows shuffled)."""
    pairs = [groups[i] for i in (order or range(len(groups)))]
    width = max(len(p) + len(r) for p, r in pairs)
    ids = torch.zeros((len(pairs), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    act = torch.zeros((len(pairs), width - 1))
    for i, (p, r) in enumerate(pairs):
        seq = p + r
        ids[i, : len(seq)], mask[i, : len(seq)] = torch.tensor(seq), 1
        act[i, len(p) - 1 : len(seq) - 1] = 1.0
    return ids, mask, act


def _groups() -> list[tuple[list[int], list[int]]]:
    """Prompts of 2, 5 and 9 tokens (one the start of another), 3 samples each; responses of 0 to 7 tokens."""
    g = torch.Generator().manual_seed(1)
    prompts = [[4, 9], [4, 9, 13, 21, 30], torch.randint(1, VOCAB, (9,), generator=g).tolist()]
    lengths = [[1, 4, 7], [0, 3, 6], [7, 7, 2]]
    return [(p, torch.randint(1, VOCAB, (n,), generator=g).tolist()) for p, ns in zip(prompts, lengths) for n in ns]


def _forward(model, rows, share: bool, entropy_grad: bool = True):
    model.zero_grad(set_to_none=True)
    ids, mask, act = rows
    logp, entropy, _ = response_outputs(model, ids, mask, act, temperature=0.7, share_prompts=share, entropy_grad=entropy_grad)
    (logp.sum() + 0.1 * entropy.sum()).backward()
    return logp.detach(), entropy.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_prompts_match_the_plain_forward(attention):
    model = make_tiny_model(VOCAB, attn_implementation=attention)
    rows = _rows(_groups(), order=[4, 0, 8, 3, 7, 1, 5, 2, 6])
    plain_logp, plain_entropy, plain_grads = _forward(model, rows, share=False)
    logp, entropy, grads = _forward(model, rows, share=True)
    act = rows[2]
    assert float((plain_logp * act).abs().sum()) > 1.0 and float((logp * (1 - act)).abs().sum()) == 0.0
    torch.testing.assert_close(logp, plain_logp, atol=2e-6, rtol=0)
    torch.testing.assert_close(entropy, plain_entropy, atol=2e-6, rtol=0)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)
    with torch.inference_mode():  # the reference's forward
        ref_logp, _, _ = response_outputs(model, *rows, temperature=0.7, with_entropy=False)
    torch.testing.assert_close(ref_logp, plain_logp, atol=2e-6, rtol=0)


def test_each_distinct_prompt_runs_once():
    """Pass 1 sees the 3 distinct prompts minus their last token (1, 4 and 8 tokens, right padded to 8);
    pass 2 the 8 rows with a response (one row has none), each its last prompt token and response[:-1]."""
    model = make_tiny_model(VOCAB)
    ids, mask, act = _rows(_groups())
    calls = []
    handle = model.model.register_forward_pre_hook(lambda m, a, kw: calls.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        states = shared_prompt_states(model.model, ids, mask, act)
    finally:
        handle.remove()
    assert calls == [(3, 8), (8, 7)]
    assert states.shape == (int(act.sum()), 32)


def test_the_plain_forward_where_sharing_does_not_apply():
    model = make_tiny_model(VOCAB)
    groups = _groups()
    distinct = _rows([groups[0], groups[3], groups[6]])  # no prompt repeated: nothing to share
    assert shared_prompt_states(model.model, *distinct) is None
    ids, mask, act = _rows(groups)
    assert shared_prompt_states(model.model, ids, mask, act) is not None  # the rows below differ from these in one thing
    gap = act.clone()
    gap[1, 3] = 0.0  # not one contiguous response (a multi-turn mask): the layout is not a rollout's
    assert shared_prompt_states(model.model, ids, mask, gap) is None
    one_token = _rows([([5], [6, 7, 8, 9])] * 4)  # a one-token prompt leaves pass 1 nothing to run
    assert shared_prompt_states(model.model, *one_token) is None
    sliding = make_tiny_model(VOCAB)
    sliding.config.sliding_window = 4  # a sliding-window cache would drop the prompt's early keys
    assert shared_prompt_states(sliding.model, ids, mask, act) is None
    checkpointed = make_tiny_model(VOCAB)
    checkpointed.activation_checkpointing_enable({"use_reentrant": False})
    checkpointed.train()  # transformers would drop the cache of every checkpointed layer
    assert shared_prompt_states(checkpointed.model, ids, mask, act) is None
    with torch.no_grad():  # nothing is checkpointed without autograd: the cache stays
        assert shared_prompt_states(checkpointed.model, ids, mask, act) is not None


def test_entropy_is_a_metric_unless_a_loss_uses_it():
    model = make_tiny_model(VOCAB)
    ids, mask, act = _rows(_groups())
    logp, metric, _ = response_outputs(model, ids, mask, act, entropy_grad=False)
    _, bonus, _ = response_outputs(model, ids, mask, act, entropy_grad=True)
    assert logp.requires_grad and not metric.requires_grad and bonus.requires_grad
    torch.testing.assert_close(metric, bonus.detach(), atol=0, rtol=0)
    # a uniform distribution over the vocabulary has entropy log V: the same formula, by hand
    from chatforge.losses.policy import entropy_from_logprobs

    uniform = torch.full((2, VOCAB), -torch.log(torch.tensor(float(VOCAB))))
    torch.testing.assert_close(entropy_from_logprobs(uniform), torch.log(torch.tensor([VOCAB, VOCAB], dtype=torch.float32)))
