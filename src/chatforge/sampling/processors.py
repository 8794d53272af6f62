"""Logit processors of the sampler: pure functions of a (rows, vocab) logits tensor.

The sampler applies them in this order before choosing a token (`Sampler._decode_batch`,
`choose_tokens`), the order vLLM uses:

1. `repetition_penalty` (CTRL, Keskar et al. 2019, as transformers' `RepetitionPenaltyLogitsProcessor`):
   every token seen in the prompt or the sample so far has its logit divided by the penalty when
   positive and multiplied by it when negative, so a penalty > 1 always makes it less likely.
2. `presence_frequency_penalty` (OpenAI's formula): `logit[j] -= c[j] * frequency + (c[j] > 0) * presence`
   with `c[j]` the count of token j among the tokens generated so far (the prompt is not counted).
3. `add_logit_bias` (OpenAI's `logit_bias`: a fixed number added to chosen tokens' logits; +100
   makes a token all but certain, -100 all but impossible).
4. temperature (`choose_tokens`), then `min_p_filter`: drop the tokens whose probability is below
   `min_p` times the most likely token's (transformers' `MinPLogitsWarper`), then top-k and top-p.

The log-probs the sampler reports are taken before any of these, from the model's raw distribution.
"""

from __future__ import annotations

import math

import torch


def repetition_penalty(logits_BV: torch.Tensor, seen_BV: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty on the tokens marked in the boolean `seen_BV`: positive logits / penalty,
    negative logits * penalty (a penalty < 1 favours repeats instead)."""
    if penalty == 1.0:
        return logits_BV
    penalized = torch.where(logits_BV > 0, logits_BV / penalty, logits_BV * penalty)
    return torch.where(seen_BV, penalized, logits_BV)


def presence_frequency_penalty(
    logits_BV: torch.Tensor, counts_BV: torch.Tensor, presence: float, frequency: float
) -> torch.Tensor:
    """OpenAI's penalties: `logits - counts * frequency - (counts > 0) * presence`."""
    if presence == 0.0 and frequency == 0.0:
        return logits_BV
    counts = counts_BV.to(logits_BV.dtype)
    return logits_BV - counts * frequency - (counts > 0).to(logits_BV.dtype) * presence


def add_logit_bias(logits_BV: torch.Tensor, bias_V: torch.Tensor | None) -> torch.Tensor:
    """`logits + bias` with `bias_V` a (vocab,) row from `bias_row` (None = no bias)."""
    return logits_BV if bias_V is None else logits_BV + bias_V


def bias_row(logit_bias: dict[int, float], vocab_size: int, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """The (vocab,) tensor of `logit_bias` (zeros elsewhere); None when empty. Ids past the model's
    logits (a tokenizer larger than the embedding) are an error: such a token can never be chosen."""
    if not logit_bias:
        return None
    too_big = [i for i in logit_bias if i >= vocab_size]
    if too_big:
        raise ValueError(f"logit_bias: token id {too_big[0]} is outside the model's {vocab_size} logits")
    row = torch.zeros(vocab_size, device=device)
    row[torch.tensor(list(logit_bias), device=device)] = torch.tensor(list(logit_bias.values()), device=device)
    return row


def min_p_filter(logits_BV: torch.Tensor, min_p: float) -> torch.Tensor:
    """-inf for every token with probability < `min_p` x the row's largest probability.

    In logit space: keep `logit >= max_logit + log(min_p)` (the softmax's normalizer cancels), so the
    most likely token always survives. `min_p` 0 keeps everything."""
    if min_p <= 0.0:
        return logits_BV
    floor = logits_BV.max(dim=-1, keepdim=True).values + math.log(min_p)
    return logits_BV.masked_fill(logits_BV < floor, float("-inf"))


def token_counts(token_ids: list[list[int]], vocab_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(rows, vocab) float counts of each row's tokens: the `counts_BV` of `presence_frequency_penalty`."""
    counts = torch.zeros((len(token_ids), vocab_size), device=device)
    for row, ids in enumerate(token_ids):
        if ids:
            index = torch.tensor(ids, device=device)
            counts[row].index_add_(0, index, torch.ones(len(ids), device=device))
    return counts
