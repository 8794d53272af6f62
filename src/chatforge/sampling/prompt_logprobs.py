"""The log-prob of every prompt token given the tokens before it: what `echo` + `logprobs` return.

lm-evaluation-harness scores a continuation through an OpenAI-style server by sending context +
continuation as the prompt with `echo: true, logprobs: k`, then summing the echoed log-probs of the
continuation's tokens (its `local-completions` model). This is a scoring forward, not decoding: one
right-padded forward per batch through `models.logprobs.answer_logits` (the same forward chatforge's
own scoring uses), log-softmax of the raw logits, no temperature or filter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from chatforge.losses.lm import IGNORE_INDEX

TOKENS_PER_FORWARD = 4096  # rows x padded length of one forward: bounds the (rows, length, vocab) logits


@dataclass
class PromptLogprobs:
    """`logprobs[0]` and `top[0]` are None (the first token has no context); then per token t
    log p(token_t | tokens_<t) and the k most likely (token id, log-prob) at position t, most likely first."""

    logprobs: list[float | None]
    top: list[list[tuple[int, float]] | None]


def prompt_logprobs(model, prompts: list[list[int]], top: int = 0, pad_id: int = 0) -> list[PromptLogprobs]:
    """`PromptLogprobs` of each prompt (non-empty token id lists), in order."""
    from chatforge.models.logprobs import answer_logits

    device = next(model.parameters()).device
    out: list[PromptLogprobs] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for chunk in _chunks(prompts):
                width = max(len(p) for p in chunk)
                input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
                for row, ids in enumerate(chunk):
                    input_ids[row, : len(ids)] = torch.tensor(ids)
                    mask[row, : len(ids)] = 1
                    labels[row, : len(ids) - 1] = torch.tensor(ids[1:])
                batch = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}
                logits, supervised = answer_logits(model, batch)  # (scored tokens, vocab), in row order
                logp = torch.log_softmax(logits.float(), dim=-1)
                chosen = logp.gather(-1, batch["labels"][supervised][:, None])[:, 0].tolist()
                if top > 0:
                    values, indices = torch.topk(logp, min(top, logp.shape[-1]), dim=-1)
                    alternatives = [list(zip(i, v)) for i, v in zip(indices.tolist(), values.tolist())]
                start = 0
                for ids in chunk:
                    scored = len(ids) - 1
                    out.append(PromptLogprobs(
                        [None] + chosen[start : start + scored],
                        [None] + (alternatives[start : start + scored] if top > 0 else [[] for _ in range(scored)]),
                    ))
                    start += scored
    finally:
        model.train(was_training)
    return out


def _chunks(prompts: list[list[int]]) -> list[list[list[int]]]:
    """Consecutive groups whose rows x longest prompt stay within `TOKENS_PER_FORWARD` (at least one prompt)."""
    chunks: list[list[list[int]]] = []
    current: list[list[int]] = []
    for ids in prompts:
        width = max([len(ids)] + [len(p) for p in current])
        if current and width * (len(current) + 1) > TOKENS_PER_FORWARD:
            chunks.append(current)
            current = []
        current.append(ids)
    if current:
        chunks.append(current)
    return chunks
