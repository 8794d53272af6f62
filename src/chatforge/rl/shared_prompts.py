"""The decoder's final hidden states at the response positions of rollout rows, each distinct prompt run once.

A GRPO/RLOO rollout holds `samples_per_prompt` rows per prompt: the same prompt tokens, then each its
own response. A plain forward runs every row's prompt again (on the benchmark's batch, 4 prompts x 4
samples of ~72 + 64 tokens, prompts are half of all tokens), and its backward does so a second time.
Here each distinct prompt goes through the decoder once and fills a KV cache; the cache is copied to
every row of that prompt (an index, so each row's gradient flows back into the one prompt pass), and a
second pass runs only the response part of every row against it:

    pass 1  (distinct prompts, right padded)   prompt[:-1]                     → KV cache
    pass 2  (rows, right padded)               prompt[-1], response[:-1]       → states at the positions
                                                                                 that predict the response
Position ids continue each row's prompt (L − 1, L, ...); the 2-D mask [prompt padding | response
padding] hides the padding of both passes, so every state attends to exactly the tokens it does in the
plain forward. The numbers are the plain forward's up to float rounding (other matrix shapes; tested in
tests/test_rl_shared_prompts.py); the gradient is the sum over a prompt's rows, as before.

It runs only where it is exact and saves work (`None` otherwise, and the caller takes the plain path):
rows laid out as rl/rollout.py writes them ([prompt][response][padding], the action mask one contiguous
run right after the prompt), prompts of at least 2 tokens, an attention without a sliding window, no
activation checkpointing under autograd, a prompt that repeats, and fewer tokens through the decoder
than the plain forward's rows x width.
"""

from __future__ import annotations

import torch

from chatforge.sampling.cache_arg import cache_kwargs

EXACT_ATTENTION = ("sdpa", "eager")  # implementations whose cached, padded attention is tested here


def shared_prompt_states(
    decoder: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, action_mask: torch.Tensor
) -> torch.Tensor | None:
    """(response positions, hidden): the final hidden states at the positions `action_mask` marks, in
    row-major order (as `states[action_mask.bool()]` of a plain forward), or None where sharing does
    not apply (module docstring)."""
    if not _supported(decoder):
        return None
    act = action_mask.bool()
    lengths = act.sum(dim=1)  # response tokens per row
    keep = lengths > 0  # rows without a response token have no state to compute
    if not bool(keep.any()):
        return None
    ids, mask, act, lengths = input_ids[keep], attention_mask[keep], act[keep], lengths[keep]
    rows, width = ids.shape
    prompt_len = act.int().argmax(dim=1) + 1  # the first action position is the prompt's last token
    if not _rollout_layout(mask, act, prompt_len, lengths):
        return None
    prefix_len = prompt_len - 1  # pass 1 runs prompt[:-1]; the last prompt token starts pass 2
    prefix_width, response_width = int(prefix_len.max()), int(lengths.max())
    columns = torch.arange(width, device=ids.device)
    in_prefix = columns[:prefix_width] < prefix_len[:, None]
    prefix = torch.where(in_prefix, ids[:, :prefix_width], -1)  # -1: a length never matches a longer prompt's token
    distinct, row_prompt = torch.unique(prefix, dim=0, return_inverse=True)
    if len(distinct) == rows or len(distinct) * prefix_width + rows * response_width >= rows * width:
        return None  # no prompt repeats (or the padding of pass 1 costs more than the sharing saves)

    from transformers import DynamicCache

    prompt_mask = distinct >= 0
    prompt_ids = distinct.clamp(min=0)  # any token id stands in for the padding: it is masked
    cache = DynamicCache(config=decoder.config)
    decoder(input_ids=prompt_ids, attention_mask=prompt_mask.long(), **cache_kwargs(decoder, cache), use_cache=True)
    cache.batch_select_indices(row_prompt)  # every row's copy of its prompt's keys and values

    offsets = torch.arange(response_width, device=ids.device)
    in_response = offsets < lengths[:, None]
    take = (prefix_len[:, None] + offsets).clamp(max=width - 1)
    response_ids = torch.where(in_response, ids.gather(1, take), 0)
    full_mask = torch.cat([prompt_mask[row_prompt], in_response], dim=1).long()
    states = decoder(
        input_ids=response_ids, attention_mask=full_mask, position_ids=prefix_len[:, None] + offsets,
        **cache_kwargs(decoder, cache), use_cache=True,
    )[0]
    return states[in_response]


def _supported(decoder: torch.nn.Module) -> bool:
    config = getattr(decoder, "config", None)
    if config is None:
        return False
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layer_types = getattr(text, "layer_types", None) or ()
    if getattr(text, "sliding_window", None) is not None or any(kind != "full_attention" for kind in layer_types):
        return False  # a sliding-window cache would drop the prompt's early keys
    if torch.is_grad_enabled() and any(getattr(m, "gradient_checkpointing", False) for m in decoder.modules()):
        return False  # transformers drops the cache of a checkpointed layer: pass 2 would not see the prompt
    return str(getattr(config, "_attn_implementation", "") or "") in EXACT_ATTENTION


def _rollout_layout(mask: torch.Tensor, act: torch.Tensor, prompt_len: torch.Tensor, lengths: torch.Tensor) -> bool:
    """Each row [prompt][response][padding]: the mask's ones exactly the first L + n tokens, the action
    positions exactly L − 1 ... L + n − 2, and every prompt at least 2 tokens."""
    columns = torch.arange(mask.shape[1], device=mask.device)
    expected_mask = columns < (prompt_len + lengths)[:, None]
    start = (prompt_len - 1)[:, None]
    expected_act = (columns[:-1] >= start) & (columns[:-1] < start + lengths[:, None])
    return bool((prompt_len >= 2).all()) and torch.equal(mask.bool(), expected_mask) and torch.equal(act, expected_act)
