"""The sampler's logit processors (penalties, min-p), its top log-probs and the prompt log-probs of
`echo`: hand-computed values, transformers' own processors, and a plain-transformers decode loop."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from chatforge.sampling import Sampler, SamplingConfig
from chatforge.sampling.processors import (
    min_p_filter,
    presence_frequency_penalty,
    repetition_penalty,
    token_counts,
)
from chatforge.sampling.prompt_logprobs import prompt_logprobs
from tiny_models import make_tiny_model

PROMPTS = [[40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50], [60, 61, 62], [70, 71, 72, 73, 74, 75]]


@pytest.fixture(scope="module")
def model():
    return make_tiny_model(vocab_size=384, seed=3, tie_word_embeddings=False).eval()


@pytest.fixture(scope="module")
def sampler(model, tiny_tokenizer):
    return Sampler(model, tiny_tokenizer)


def test_presence_frequency_penalty_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0, 0.5]])
    counts = token_counts([[1, 2, 1]], 4)
    assert counts.tolist() == [[0.0, 2.0, 1.0, 0.0]]
    out = presence_frequency_penalty(logits, counts, presence=0.5, frequency=0.25)
    # token 1: 2 - 2*0.25 - 0.5 = 1.0; token 2: 3 - 1*0.25 - 0.5 = 2.25; unseen tokens unchanged
    assert out.tolist() == [[1.0, 1.0, 2.25, 0.5]]
    negative = presence_frequency_penalty(logits, counts, presence=-1.0, frequency=-2.0)  # encourages repeats
    assert negative.tolist() == [[1.0, 7.0, 6.0, 0.5]]
    assert presence_frequency_penalty(logits, counts, 0.0, 0.0) is logits


def test_repetition_penalty_by_hand_and_as_transformers():
    from transformers import RepetitionPenaltyLogitsProcessor

    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0]])
    seen = torch.tensor([[True, True, False, False]])
    assert repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -2.0, 0.5, -3.0]]  # /2 positive, x2 negative
    assert repetition_penalty(logits, seen, 0.5).tolist() == [[4.0, -0.5, 0.5, -3.0]]
    torch.manual_seed(0)
    big = torch.randn(3, 50)
    history = torch.randint(0, 50, (3, 7))
    seen_big = torch.zeros(3, 50, dtype=torch.bool).scatter(1, history, True)
    expected = RepetitionPenaltyLogitsProcessor(1.3)(history, big.clone())
    torch.testing.assert_close(repetition_penalty(big, seen_big, 1.3), expected)


def test_min_p_by_hand_and_as_transformers():
    from transformers import MinPLogitsWarper

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = min_p_filter(logits, 0.2)  # threshold 0.2 * 0.5 = 0.1: the 0.05 token goes
    assert torch.isfinite(kept).tolist() == [[True, True, True, False]]
    assert torch.isfinite(min_p_filter(logits, 1.0)).tolist() == [[True, False, False, False]]
    assert min_p_filter(logits, 0.0) is logits
    torch.manual_seed(1)
    big = torch.randn(4, 100) * 3
    expected = MinPLogitsWarper(0.05)(None, big.clone())
    assert torch.equal(torch.isfinite(min_p_filter(big, 0.05)), torch.isfinite(expected))


def reference_greedy(model, prompt: list[int], max_new: int, presence=0.0, frequency=0.0, repetition=1.0) -> list[int]:
    """Greedy decoding with the penalties written out: a full forward of plain transformers per step,
    the OpenAI formula over the generated tokens, CTRL's rule over prompt + generated tokens."""
    ids = list(prompt)
    out: list[int] = []
    for _ in range(max_new):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1].float()
        for token in set(ids):
            if repetition != 1.0:
                logits[token] = logits[token] / repetition if logits[token] > 0 else logits[token] * repetition
        for token in set(out):
            logits[token] -= out.count(token) * frequency + presence
        nxt = int(logits.argmax())
        out.append(nxt)
        ids.append(nxt)
    return out


@pytest.mark.parametrize("penalties", [
    {"presence": 1.5, "frequency": 0.0}, {"presence": 0.0, "frequency": 0.7}, {"repetition": 1.8},
    {"presence": 0.3, "frequency": 0.4, "repetition": 1.3},
])
def test_penalised_greedy_equals_the_written_out_loop(model, sampler, penalties):
    cfg = SamplingConfig(temperature=0, max_new_tokens=10, stop_token_ids=[], presence_penalty=penalties.get("presence", 0.0),
                         frequency_penalty=penalties.get("frequency", 0.0), repetition_penalty=penalties.get("repetition", 1.0))
    out = sampler.generate(PROMPTS, cfg)  # one left-padded batch: the penalty state follows each row
    plain = sampler.generate(PROMPTS, SamplingConfig(temperature=0, max_new_tokens=10, stop_token_ids=[]))
    for prompt, (completion,) in zip(PROMPTS, out):
        assert completion.token_ids == reference_greedy(model, prompt, 10, **penalties)
    assert any(c[0].token_ids != u[0].token_ids for c, u in zip(out, plain))  # the penalties changed something


def test_penalties_follow_rows_that_finish_early(model, sampler, tiny_tokenizer):
    # Stop on each row's 3rd unpenalised token: rows leave the batch at different steps.
    cfg = SamplingConfig(temperature=0, max_new_tokens=8, stop_token_ids=[], frequency_penalty=1.0)
    full = sampler.generate(PROMPTS, cfg)
    stop_ids = sorted({c[0].token_ids[2] for c in full})
    stopped = sampler.generate(PROMPTS, cfg.model_copy(update={"stop_token_ids": stop_ids}))
    for (f,), (s,) in zip(full, stopped):
        cut = next(t for t, tok in enumerate(f.token_ids) if tok in stop_ids)
        assert s.token_ids == f.token_ids[: cut + 1]


def test_min_p_one_is_greedy_at_any_temperature(sampler):
    greedy = sampler.generate(PROMPTS, SamplingConfig(temperature=0, max_new_tokens=8, stop_token_ids=[]))
    drawn = sampler.generate(PROMPTS, SamplingConfig(temperature=1.5, min_p=1.0, max_new_tokens=8, stop_token_ids=[], seed=4))
    assert [c[0].token_ids for c in drawn] == [c[0].token_ids for c in greedy]


def test_top_logprobs_equal_a_plain_forward(model, sampler):
    cfg = SamplingConfig(temperature=0.9, max_new_tokens=6, stop_token_ids=[], seed=2, top_logprobs=3, n=2)
    out = sampler.generate(PROMPTS[:2], cfg)
    for prompt, samples in zip(PROMPTS[:2], out):
        for c in samples:
            assert len(c.top_logprobs) == len(c.token_ids) == 6
            with torch.no_grad():
                logits = model(torch.tensor([prompt + c.token_ids])).logits[0].float()
            logp = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
            values, ids = logp.topk(3, dim=-1)
            for t, alternatives in enumerate(c.top_logprobs):
                assert [i for i, _ in alternatives] == ids[t].tolist()
                assert [v for _, v in alternatives] == pytest.approx(values[t].tolist(), abs=1e-4)
                assert c.logprobs[t] == pytest.approx(logp[t, c.token_ids[t]].item(), abs=1e-4)
    assert sampler.generate(PROMPTS[:1], SamplingConfig(max_new_tokens=2))[0][0].top_logprobs is None


def test_prompt_logprobs_equal_a_plain_forward(model):
    out = prompt_logprobs(model, PROMPTS + [[7]], top=2)
    for prompt, scores in zip(PROMPTS, out):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prompt])).logits[0].float(), dim=-1)
        assert scores.logprobs[0] is None and scores.top[0] is None and len(scores.logprobs) == len(prompt)
        for t in range(1, len(prompt)):
            assert scores.logprobs[t] == pytest.approx(logp[t - 1, prompt[t]].item(), abs=1e-5)
            values, ids = logp[t - 1].topk(2)
            assert [i for i, _ in scores.top[t]] == ids.tolist()
            assert scores.top[t][0][1] == pytest.approx(values[0].item(), abs=1e-5)
        assert math.fsum(scores.logprobs[1:]) < 0
    assert out[-1].logprobs == [None] and out[-1].top == [None]  # a one-token prompt has nothing to score


def test_config_ranges():
    for bad in ({"presence_penalty": 2.5}, {"frequency_penalty": -2.1}, {"repetition_penalty": 0.0},
                {"min_p": 1.5}, {"top_logprobs": 21}):
        with pytest.raises(ValidationError):
            SamplingConfig(**bad)
