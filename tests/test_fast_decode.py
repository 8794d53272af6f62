"""The fast decoder computes what transformers computes: prefill and step logits against the model's
forward, its KV cache against transformers' cache, greedy tokens against `model.generate`, for the
architectures it claims (Llama with GQA/MQA and scaled rope, Mistral, Qwen2 with q/k/v biases), with
repacking after a weight update; and it refuses what it cannot decode."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from chatforge.errors import ConfigError
from chatforge.sampling import Sampler, SamplingConfig
from chatforge.sampling.cache_arg import cache_kwargs
from chatforge.sampling.fast_decode import FastDecoder, available_kernel, unsupported_reason
from chatforge.sampling.sampler import filter_logits, nucleus_threshold
from tiny_models import make_tiny_model

PROMPTS = [[40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50], [60, 61, 62], [70, 71, 72, 73, 74, 75]]
KERNELS = sorted({"plain", available_kernel()} | ({"mkl"} if torch.backends.mkl.is_available() else set()))


def qwen2_with_biases():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(6)
    config = Qwen2Config(
        vocab_size=384, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False, attn_implementation="sdpa",
    )
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():  # transformers initializes biases to zero; make them matter
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    return model


def mistral():
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(7)
    config = MistralConfig(
        vocab_size=384, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, max_position_embeddings=128, sliding_window=64, attn_implementation="sdpa",
    )
    return MistralForCausalLM(config)


MODELS = {
    "llama-gqa": lambda: make_tiny_model(seed=3, tie_word_embeddings=False),
    "llama-mqa-tied": lambda: make_tiny_model(seed=4, num_key_value_heads=1),
    "llama-mha-linear-rope": lambda: make_tiny_model(
        seed=5, num_key_value_heads=4, rope_scaling={"rope_type": "linear", "factor": 2.0}
    ),
    "mistral": mistral,
    "qwen2-bias": qwen2_with_biases,
}


def left_padded(prompts):
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_prefill_and_steps_match_the_transformers_forward(name, kernel, monkeypatch):
    # Prompts of 11, 3 and 6 tokens, packed at most 9 real tokens at a time: prefilled as [11] and [3, 6].
    monkeypatch.setattr("chatforge.sampling.fast_decode.PREFILL_TOKENS", 9)
    model = MODELS[name]().eval()
    assert unsupported_reason(model, 40) is None
    ids, mask, positions = left_padded(PROMPTS)
    decoder = FastDecoder(model, kernel=kernel)
    decoder.prepare(len(PROMPTS))
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        ref = model(input_ids=ids, attention_mask=mask, position_ids=positions, **cache_kwargs(model, cache)).logits[:, -1]
        state, logits = decoder.prefill(ids, mask, positions, capacity=ids.shape[1] + 6)
        torch.testing.assert_close(logits, ref, atol=2e-5, rtol=1e-5)
        for layer, k_buf, v_buf in zip(cache.layers, state.keys, state.values):
            for ours, theirs in ((k_buf.transpose(-1, -2), layer.keys), (v_buf, layer.values)):
                real = mask.bool()[:, None, :, None].expand_as(theirs)  # padding columns are never attended
                torch.testing.assert_close(ours[:, :, : ids.shape[1]][real], theirs[real], atol=2e-5, rtol=1e-5)
        # five steps, each fed the transformers argmax, positions counting real tokens only
        next_ids, pos, hf_mask = ref.argmax(-1), positions[:, -1] + 1, mask
        for _ in range(5):
            hf_mask = torch.cat([hf_mask, hf_mask.new_ones((len(PROMPTS), 1))], dim=1)
            ref = model(
                input_ids=next_ids[:, None], attention_mask=hf_mask, position_ids=pos[:, None], **cache_kwargs(model, cache),
            ).logits[:, -1]
            torch.testing.assert_close(decoder.step(state, next_ids, pos), ref, atol=2e-5, rtol=1e-5)
            next_ids, pos = ref.argmax(-1), pos + 1
        assert state.length == ids.shape[1] + 5


@pytest.mark.parametrize("name", sorted(MODELS))
def test_greedy_equals_model_generate_with_rows_stopping_at_different_steps(name, tiny_tokenizer):
    model = MODELS[name]().eval()
    ids, mask, _ = left_padded(PROMPTS)
    expected = model.generate(
        input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=10, eos_token_id=None, pad_token_id=0,
        top_k=None, top_p=None, temperature=None,
    )[:, ids.shape[1]:].tolist()
    sampler = Sampler(model, tiny_tokenizer)
    out = sampler.generate(PROMPTS, SamplingConfig(temperature=0, max_new_tokens=10, stop_token_ids=[], decode="fast"))
    assert [c[0].token_ids for c in out] == expected
    # A stop id taken from row 1's greedy output ends that row early; the others continue alone.
    stop = expected[1][3]
    out = sampler.generate(PROMPTS, SamplingConfig(temperature=0, max_new_tokens=10, stop_token_ids=[stop], decode="fast"))
    for row, (completion,) in zip(expected, out):
        cut = row.index(stop) + 1 if stop in row else len(row)
        assert completion.token_ids == row[:cut]


@pytest.mark.parametrize("n", [3, 2])
def test_n_samples_reuse_one_prefill_and_match_the_transformers_path(tiny_tokenizer, n):
    # n=3: batches of 3 rows (one prompt each); n=2: 4 rows then 2, on weights packed once for the first.
    model = MODELS["llama-gqa"]().eval()
    sampler = Sampler(model, tiny_tokenizer)
    cfg = SamplingConfig(temperature=0, max_new_tokens=6, n=n, stop_token_ids=[], max_batch_size=4)
    fast = sampler.generate(PROMPTS, cfg.model_copy(update={"decode": "fast"}))
    slow = sampler.generate(PROMPTS, cfg.model_copy(update={"decode": "transformers"}))
    assert [[c.token_ids for c in p] for p in fast] == [[c.token_ids for c in p] for p in slow]
    for per_prompt_fast, per_prompt_slow in zip(fast, slow):
        for a, b in zip(per_prompt_fast, per_prompt_slow):
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("optimizer_kind", ["sgd", "engine_fused_adamw"])
def test_weights_changed_in_place_are_repacked(tiny_tokenizer, optimizer_kind):
    """Also after the engine's fused AdamW, whose kernel leaves `_version` alone unless the optimizer
    bumps it (it did not, and a long-lived sampler kept sampling the weights from before the step)."""
    from chatforge.engine.config import OptimConfig
    from chatforge.engine.optim import build_optimizer

    model = MODELS["llama-gqa"]().eval()
    sampler = Sampler(model, tiny_tokenizer)
    cfg = SamplingConfig(temperature=0, max_new_tokens=8, stop_token_ids=[], decode="fast")
    before = sampler.generate(PROMPTS, cfg)
    # an RL step between two generate calls
    if optimizer_kind == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    else:
        optimizer = build_optimizer(model, OptimConfig(lr=0.05, weight_decay=0.0, implementation="fused"), torch.device("cpu"))
    model(torch.tensor([PROMPTS[0]]), labels=torch.tensor([PROMPTS[0]])).loss.backward()
    optimizer.step()
    after = sampler.generate(PROMPTS, cfg)
    reference = sampler.generate(PROMPTS, cfg.model_copy(update={"decode": "transformers"}))
    assert [c[0].token_ids for c in after] == [c[0].token_ids for c in reference]
    assert [c[0].token_ids for c in after] != [c[0].token_ids for c in before]


def test_what_the_fast_path_refuses(tiny_tokenizer):
    from peft import LoraConfig, get_peft_model
    from transformers import FalconConfig, FalconForCausalLM

    falcon = FalconForCausalLM(FalconConfig(vocab_size=384, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, alibi=True))
    assert "model type 'falcon'" in unsupported_reason(falcon)
    lora = get_peft_model(make_tiny_model(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert "not a plain Linear" in unsupported_reason(lora.base_model.model)
    assert "sliding-window" in unsupported_reason(mistral(), total_length=65)
    gelu = make_tiny_model(hidden_act="gelu")
    assert "hidden_act" in unsupported_reason(gelu)
    with pytest.raises(ConfigError, match="decode=fast cannot decode this model: hidden_act"):
        Sampler(gelu, tiny_tokenizer).generate([[1, 2]], SamplingConfig(max_new_tokens=2, decode="fast"))
    # decode=auto falls back to transformers' forward for the same model
    out = Sampler(gelu, tiny_tokenizer).generate([[1, 2]], SamplingConfig(max_new_tokens=2, temperature=0))
    assert len(out[0][0].token_ids) == 2


def test_nucleus_threshold_keeps_what_the_sort_based_rule_keeps():
    gen = torch.Generator().manual_seed(0)
    for vocab, scale in ((7, 0.5), (300, 2.0), (5000, 6.0)):
        logits = torch.randn((16, vocab), generator=gen) * scale
        probs = logits.softmax(-1)
        for top_p in (0.05, 0.3, 0.7, 0.9, 0.999):
            kept = probs >= nucleus_threshold(probs, top_p)
            assert torch.equal(kept, torch.isfinite(filter_logits(logits, top_p=top_p))), (vocab, top_p)
    # a one-hot row keeps its one token; a uniform row keeps all tied tokens
    probs = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    assert (probs >= nucleus_threshold(probs, 0.5)).tolist() == [[False, True, False, False], [True] * 4]


def test_bfloat16_model_decodes_in_bfloat16(tiny_tokenizer):
    model = make_tiny_model(seed=3).to(torch.bfloat16).eval()
    ids, mask, _ = left_padded(PROMPTS)
    expected = model.generate(
        input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=6, eos_token_id=None, pad_token_id=0,
        top_k=None, top_p=None, temperature=None,
    )[:, ids.shape[1]:].tolist()
    out = Sampler(model, tiny_tokenizer).generate(
        PROMPTS, SamplingConfig(temperature=0, max_new_tokens=6, stop_token_ids=[], decode="fast")
    )
    assert [c[0].token_ids for c in out] == expected
