"""The sampler: greedy equals transformers' greedy decoding, log-probs equal a full forward, filtering,
stop ids and stop strings, n samples, seeding and the errors a user can hit."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from chatforge.errors import ChatforgeError, ConfigError
from chatforge.sampling import Sampler, SamplingConfig, chat_prompt, filter_logits, find_stop
from chatforge.sampling.sampler import _batches, default_stop_ids, draw, draw_nucleus
from tiny_models import make_tiny_model

# Ragged on purpose: one batch holds prompts of 3 to 11 tokens, left padded.
PROMPTS = [[40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50], [60, 61, 62], [70, 71, 72, 73, 74, 75]]


@pytest.fixture(scope="module")
def model():
    # Untied embeddings: a tied random tiny model mostly repeats its last input token.
    return make_tiny_model(vocab_size=384, seed=3, tie_word_embeddings=False).eval()


@pytest.fixture(scope="module")
def sampler(model, tiny_tokenizer):
    return Sampler(model, tiny_tokenizer)


def hf_greedy(model, tokenizer, prompt: list[int], max_new: int, eos: list[int] | None) -> list[int]:
    """transformers' greedy decoding of one unpadded prompt, without the padding after eos."""
    out = model.generate(
        torch.tensor([prompt]), do_sample=False, max_new_tokens=max_new, eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id, top_k=None, top_p=None, temperature=None,
    )
    ids = out[0, len(prompt) :].tolist()
    if eos:
        for t, tok in enumerate(ids):
            if tok in eos:
                return ids[: t + 1]
    return ids


def test_greedy_equals_transformers_greedy(model, sampler, tiny_tokenizer):
    cfg = SamplingConfig(temperature=0, max_new_tokens=12, stop_token_ids=[])
    out = sampler.generate(PROMPTS, cfg)
    for prompt, (completion,) in zip(PROMPTS, out):
        assert completion.token_ids == hf_greedy(model, tiny_tokenizer, prompt, 12, None)
        assert completion.finish_reason == "length" and completion.stop_reason is None
    # Batched transformers greedy over the same left-padded batch agrees too.
    width = max(map(len, PROMPTS))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in PROMPTS])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in PROMPTS])[:, None]).long()
    batched = model.generate(
        input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12, eos_token_id=None, pad_token_id=0,
        top_k=None, top_p=None, temperature=None,
    )
    assert batched[:, width:].tolist() == [c[0].token_ids for c in out]


def test_greedy_with_stop_id_ends_rows_at_different_steps(model, sampler, tiny_tokenizer):
    # Use a token that greedy decoding reaches in one row early: that row stops and leaves the batch
    # while the others go on, and every row must still match transformers with that eos.
    free = sampler.generate(PROMPTS, SamplingConfig(temperature=0, max_new_tokens=16, stop_token_ids=[]))
    stop = free[0][0].token_ids[3]
    out = sampler.generate(PROMPTS, SamplingConfig(temperature=0, max_new_tokens=16, stop_token_ids=[stop]))
    lengths = set()
    for prompt, (completion,) in zip(PROMPTS, out):
        expected = hf_greedy(model, tiny_tokenizer, prompt, 16, [stop])
        assert completion.token_ids == expected
        if expected[-1] == stop:
            assert (completion.finish_reason, completion.stop_reason) == ("stop", stop)
            assert completion.text == tiny_tokenizer.decode(expected[:-1], skip_special_tokens=True)
        else:
            assert completion.finish_reason == "length"
        lengths.add(len(completion.token_ids))
    assert out[0][0].finish_reason == "stop" and len(out[0][0].token_ids) <= 4
    assert len(lengths) > 1


def test_logprobs_equal_a_full_forward(model, sampler):
    out = sampler.generate(PROMPTS, SamplingConfig(temperature=1.0, top_p=0.8, max_new_tokens=10, seed=1))
    for prompt, (completion,) in zip(PROMPTS, out):
        full = torch.tensor([prompt + completion.token_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(full).logits[0].float(), dim=-1)
        positions = torch.arange(len(prompt) - 1, full.shape[1] - 1)
        expected = logp[positions, torch.tensor(completion.token_ids)]
        assert len(completion.logprobs) == len(completion.token_ids)
        torch.testing.assert_close(torch.tensor(completion.logprobs), expected, atol=1e-5, rtol=0)


def test_top_k_1_is_greedy(sampler):
    greedy = sampler.generate(PROMPTS, SamplingConfig(temperature=0, max_new_tokens=8, stop_token_ids=[]))
    top1 = sampler.generate(PROMPTS, SamplingConfig(temperature=1.5, top_k=1, max_new_tokens=8, stop_token_ids=[], seed=5))
    assert [c[0].token_ids for c in top1] == [c[0].token_ids for c in greedy]


def test_seeded_sampling_is_reproducible(sampler):
    def draw(seed):
        cfg = SamplingConfig(temperature=1.0, max_new_tokens=10, n=2, stop_token_ids=[], seed=seed)
        return [[c.token_ids for c in per_prompt] for per_prompt in sampler.generate(PROMPTS, cfg)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_training_mode_is_restored(model, sampler):
    model.train()
    sampler.generate([[1, 2]], SamplingConfig(max_new_tokens=2))
    assert model.training
    model.eval()


def test_filter_logits_by_hand():
    # probabilities 0.5, 0.3, 0.15, 0.05 (in a shuffled order)
    logits = torch.tensor([[0.15, 0.5, 0.05, 0.3]]).log()
    kept = lambda **kw: torch.isfinite(filter_logits(logits, **kw))[0].tolist()  # noqa: E731
    assert kept() == [True, True, True, True]
    assert kept(top_k=2) == [False, True, False, True]
    assert kept(top_k=1) == [False, True, False, False]
    # top-p keeps a token while the mass ranked above it is below top_p
    assert kept(top_p=0.4) == [False, True, False, False]  # mass above 0.3 is 0.5 >= 0.4
    assert kept(top_p=0.6) == [False, True, False, True]  # mass above 0.15 is 0.8 >= 0.6
    assert kept(top_p=0.9) == [True, True, False, True]  # mass above 0.05 is 0.95 >= 0.9
    assert kept(top_k=3, top_p=0.9) == [True, True, False, True]
    assert kept(top_k=2, top_p=0.99) == [False, True, False, True]  # top-p over what top-k left
    # kept logits are unchanged
    out = filter_logits(logits, top_p=0.6)
    assert out[0, 1] == logits[0, 1] and out[0, 3] == logits[0, 3]


def test_filter_logits_matches_transformers_warpers():
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=gen) * 3
    for top_k, top_p in [(0, 0.5), (0, 0.9), (10, 1.0), (10, 0.7)]:
        expected = logits
        if top_k:
            expected = TopKLogitsWarper(top_k)(None, expected)
        if top_p < 1:
            expected = TopPLogitsWarper(top_p)(None, expected)
        ours = filter_logits(logits, top_k=top_k, top_p=top_p)
        assert torch.equal(torch.isfinite(ours), torch.isfinite(expected)), (top_k, top_p)


def test_draw_follows_the_distribution_and_skips_filtered_tokens():
    gen = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.0, 0.1, 0.0, 0.6, 0.3, 0.0]]).repeat(200_000, 1)
    freq = torch.bincount(draw(probs, gen), minlength=6) / probs.shape[0]
    # 200k draws: one standard error is at most 0.0011
    torch.testing.assert_close(freq, probs[0], atol=0.005, rtol=0)
    assert freq[[0, 2, 5]].sum() == 0
    # one token left after filtering: always that one, wherever it sits
    for keep in (0, 5):
        one = torch.zeros(1000, 6)
        one[:, keep] = 1.0
        assert (draw(one, gen) == keep).all()


def test_draw_nucleus_samples_the_filtered_distribution():
    gen = torch.Generator().manual_seed(1)
    logits = torch.tensor([0.15, 0.5, 0.05, 0.3, 0.0]).clamp(min=1e-9).log()
    for top_k, top_p in [(0, 0.6), (0, 0.9), (2, 0.99), (3, 0.9), (0, 0.4)]:
        expected = filter_logits(logits[None], top_k, top_p).softmax(dim=-1)[0]
        picks = draw_nucleus(logits[None].repeat(100_000, 1), top_k, top_p, gen)
        freq = torch.bincount(picks, minlength=5) / 100_000
        torch.testing.assert_close(freq, expected, atol=0.006, rtol=0)
        assert freq[expected == 0].sum() == 0, (top_k, top_p)


def test_find_stop():
    assert find_stop("abc###def", ["###"]) == (3, "###")
    assert find_stop("abc", ["x"]) is None
    assert find_stop("a.b!c", ["!", "."]) == (1, ".")  # earliest wins
    assert find_stop("a==b", ["=", "=="]) == (1, "==")  # the longer one on a tie


def test_stop_string_cuts_text_and_tokens(sampler, tiny_tokenizer):
    free = sampler.generate(PROMPTS[:1], SamplingConfig(temperature=0, max_new_tokens=24, stop_token_ids=[]))[0][0]
    text = free.text
    assert len(text) > 6, "the tiny model should write some text"
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = text.find(stop)
    out = sampler.generate(
        PROMPTS[:1], SamplingConfig(temperature=0, max_new_tokens=24, stop_token_ids=[], stop=[stop, "@@never@@"])
    )[0][0]
    assert (out.finish_reason, out.stop_reason) == ("stop", stop)
    assert out.text == text[:cut]
    # token ids end at the token that completed the stop string, with their log-probs
    assert out.token_ids == free.token_ids[: len(out.token_ids)]
    assert out.logprobs == free.logprobs[: len(out.token_ids)]
    assert stop in tiny_tokenizer.decode(out.token_ids, skip_special_tokens=True)
    assert stop not in tiny_tokenizer.decode(out.token_ids[:-1], skip_special_tokens=True)


def test_n_samples_per_prompt_and_batching(sampler):
    greedy = sampler.generate(PROMPTS, SamplingConfig(temperature=0, max_new_tokens=5, stop_token_ids=[]))
    for n, max_batch in [(3, 4), (3, 2), (1, 1)]:
        cfg = SamplingConfig(temperature=0, max_new_tokens=5, n=n, max_batch_size=max_batch, stop_token_ids=[])
        out = sampler.generate(PROMPTS, cfg)
        assert [len(per) for per in out] == [n] * len(PROMPTS)
        for i, per in enumerate(out):
            # each prompt is prefilled once and its cache repeated n times: every copy decodes alike
            assert all(c.prompt_index == i and c.token_ids == greedy[i][0].token_ids for c in per)
    assert _batches(5, 2, 4) == [([0, 1], 2), ([2, 3], 2), ([4], 2)]
    assert _batches(2, 5, 2) == [([0], 2), ([0], 2), ([0], 1), ([1], 2), ([1], 2), ([1], 1)]


def test_string_and_chat_prompts(sampler, tiny_tokenizer):
    messages = [{"role": "user", "content": "hello"}]
    ids = chat_prompt(tiny_tokenizer, messages)
    assert tiny_tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
    cfg = SamplingConfig(temperature=0, max_new_tokens=4)
    by_text = sampler.generate([tiny_tokenizer.decode(ids)], cfg)
    by_ids = sampler.generate([ids], cfg)
    assert by_text[0][0].token_ids == by_ids[0][0].token_ids
    assert default_stop_ids(tiny_tokenizer) == [tiny_tokenizer.eos_token_id, tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_empty_and_too_long_prompts(model, sampler):
    assert sampler.generate([], SamplingConfig()) == []
    with pytest.raises(ChatforgeError, match="prompt 1 is empty"):
        sampler.generate([[1], []])
    limit = model.config.max_position_embeddings
    with pytest.raises(ChatforgeError, match=f"prompt 0 has {limit} tokens .* at most {limit} positions"):
        sampler.generate([[7] * limit])
    # near the limit, generation stops at the last position with finish_reason "length"
    out = sampler.generate([[7] * (limit - 3)], SamplingConfig(max_new_tokens=10, stop_token_ids=[]))
    assert len(out[0][0].token_ids) == 3 and out[0][0].finish_reason == "length"


def test_config_validation():
    with pytest.raises(ValidationError, match="extra"):
        SamplingConfig(temprature=0.5)
    for bad in [dict(top_p=0.0), dict(top_p=1.5), dict(temperature=-1), dict(n=0), dict(stop=[""]), dict(top_k=-1)]:
        with pytest.raises(ValidationError):
            SamplingConfig(**bad)
    assert SamplingConfig(temperature=0).greedy


def test_vllm_backend_missing_is_a_config_error(sampler):
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed here")
    with pytest.raises(ConfigError, match="backend=vllm needs the vllm package"):
        sampler.generate([[1, 2]], SamplingConfig(backend="vllm"))


def test_greedy_equals_transformers_on_alibi_falcon(tiny_tokenizer):
    # The ALiBi preset's architecture: no position table, biases from the attention mask.
    from transformers import FalconConfig, FalconForCausalLM

    torch.manual_seed(0)
    config = FalconConfig(
        vocab_size=384, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, alibi=True,
        multi_query=True, new_decoder_architecture=False, bos_token_id=2, eos_token_id=3,
    )
    model = FalconForCausalLM(config).eval()
    out = Sampler(model, tiny_tokenizer).generate(PROMPTS, SamplingConfig(temperature=0, max_new_tokens=8, stop_token_ids=[]))
    for prompt, (completion,) in zip(PROMPTS, out):
        assert completion.token_ids == hf_greedy(model, tiny_tokenizer, prompt, 8, None)


def test_a_stream_is_the_samplers_loop_token_for_token(model, tiny_tokenizer):
    """serve.stream feeds from Sampler.generate's own loop: with one seed the streamed samples are the
    non-streamed ones (ids, log-probs, finish), and each sample's deltas concatenate to its text."""
    from chatforge.serve.stream import IncrementalDecoder

    prompt = PROMPTS[0]
    plain = Sampler(model, tiny_tokenizer).generate([prompt], SamplingConfig(temperature=1.0, n=3, seed=11, max_new_tokens=10))[0]
    stop = plain[0].text[2:4]  # a stop string the first sample meets
    for cfg in (SamplingConfig(temperature=1.0, n=3, seed=11, max_new_tokens=10),
                SamplingConfig(temperature=1.0, n=3, seed=11, max_new_tokens=10, stop=[stop], max_batch_size=2)):
        expected = Sampler(model, tiny_tokenizer).generate([prompt], cfg)[0]
        deltas: dict[int, list[str]] = {0: [], 1: [], 2: []}
        finishes: dict[int, str] = {}

        def on_delta(index, text, finish, deltas=deltas, finishes=finishes):
            assert index not in finishes  # nothing after a sample's last delta
            deltas[index].append(text)
            if finish is not None:
                finishes[index] = finish

        streamed = IncrementalDecoder(model, tiny_tokenizer).generate(prompt, cfg, on_delta)
        assert [(c.token_ids, c.logprobs, c.finish_reason) for c in streamed] == [
            (c.token_ids, c.logprobs, c.finish_reason) for c in expected
        ]
        assert ["".join(deltas[i]) for i in range(3)] == [c.text for c in expected]
        assert finishes == {i: c.finish_reason for i, c in enumerate(expected)}
    assert expected[0].finish_reason == "stop" and stop not in expected[0].text
