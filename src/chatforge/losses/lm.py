"""Language-modelling losses: summed token cross-entropy and its bits-per-byte form.

Pure functions of tensors. The loss is a *sum* with its count returned beside it, so the engine
can divide by the number of valid tokens of the whole optimizer step (all micro-batches, all ranks):
averaging per micro-batch would weight a short micro-batch's tokens more than a long one's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_nll_sum(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX):
    """Summed negative log-likelihood of `labels` under `logits`, and the number of counted tokens.

    Args:
        logits: (B, T, V) scores for the token at each position (already aligned with labels).
        labels: (B, T) target ids; positions equal to `ignore_index` are not counted.
    Returns:
        (loss_sum, n_tokens): a scalar tensor in nats and an int64 scalar tensor.
    """
    flat_logits = logits.reshape(-1, logits.size(-1)).float()
    flat_labels = labels.reshape(-1)
    loss_sum = F.cross_entropy(flat_logits, flat_labels, ignore_index=ignore_index, reduction="sum")
    n_tokens = (flat_labels != ignore_index).sum()
    return loss_sum, n_tokens


def weighted_token_nll_sum(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, ignore_index: int = IGNORE_INDEX
):
    """Σ w_t · NLL_t over the counted tokens, and the number of counted tokens.

    The count is of tokens, not of weight, so a weight below 1 (C-RLFT's novice class) shrinks a
    token's pull instead of being normalised away: all-ones weights give `token_nll_sum` exactly.
    """
    per_token, counted = token_nll(logits, labels, ignore_index)
    return (per_token * weights.reshape(-1).to(per_token.dtype) * counted).sum(), counted.sum()


def token_nll(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX):
    """Per-token NLL (float32, 0 where ignored) and the counted mask, both flattened."""
    flat_labels = labels.reshape(-1)
    per_token = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), flat_labels, ignore_index=ignore_index, reduction="none"
    )
    return per_token, flat_labels != ignore_index


def bits_per_byte(nll_sum_nats: float, n_bytes: int) -> float:
    """Total NLL in nats over a text, expressed in bits per UTF-8 byte of that text.

    Unlike per-token perplexity this does not depend on the tokenizer, so models with different
    vocabularies compare on the same scale.
    """
    if n_bytes <= 0:
        raise ValueError("bits_per_byte needs a positive byte count")
    return nll_sum_nats / (math.log(2) * n_bytes)


def perplexity(nll_sum_nats: float, n_tokens: int) -> float:
    if n_tokens <= 0:
        raise ValueError("perplexity needs a positive token count")
    return math.exp(nll_sum_nats / n_tokens)
