"""Per-token log-probs (and entropies, and hidden states) of the response tokens of rollout rows.

A rollout row is [prompt tokens][response tokens][padding], right padded, with `action_mask`
(rows, length − 1) marking position t when token t + 1 is a response token: the shifted
convention of the engine's labels. Only those positions go through the LM head (the prompt's and
the padding's (rows, length, vocab) logits are never built), as in the SFT objective.

Logits are divided by the sampling temperature, so the log-probs are those of the distribution the
tokens were drawn from (before top-k/top-p, which a trained policy's ratio cannot follow).

Where the rows share prompts (a GRPO/RLOO group) each distinct prompt runs through the decoder once
(rl/shared_prompts.py); `share_prompts=False` forces the plain forward (the tests' reference).
The entropy is a metric unless a loss uses it: `entropy_grad=False` computes it from the detached
log-probs, so the backward never runs through a second (rows, vocab) pass.
"""

from __future__ import annotations

import torch

from chatforge.losses.policy import entropy_from_logprobs
from chatforge.models.logprobs import separable_head
from chatforge.rl.shared_prompts import shared_prompt_states


def response_outputs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    action_mask: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = True,
    with_hidden: bool = False,
    entropy_grad: bool = True,
    share_prompts: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(logp, entropy, hidden) of the response positions: logp and entropy (rows, length − 1), 0
    elsewhere; hidden (rows, length − 1, hidden) the final hidden states at every position t (the
    state the token t + 1 is chosen in), for a value head; None when not asked for. The entropy
    carries a gradient only with `entropy_grad` (a loss with an entropy bonus)."""
    positions = action_mask.bool()
    targets = input_ids[:, 1:][positions]
    parts = separable_head(model)
    hidden = None
    if parts is not None:
        decoder, head = parts
        response_states = None
        if share_prompts and not with_hidden:  # the value head needs every position's state: plain forward
            response_states = shared_prompt_states(decoder, input_ids, attention_mask, action_mask)
        if response_states is None:
            states = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)[0][:, :-1]
            response_states = states[positions]
            hidden = states if with_hidden else None
        logits = head(response_states)
    else:  # DDP / FSDP / compiled wrappers: their own forward must run
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, output_hidden_states=with_hidden)
        logits = out.logits[:, :-1][positions]
        hidden = out.hidden_states[-1][:, :-1] if with_hidden else None
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    log_probs = torch.log_softmax(logits, dim=-1)
    token_logp = log_probs.gather(-1, targets[:, None])[:, 0]
    logp = torch.zeros(action_mask.shape, dtype=token_logp.dtype, device=token_logp.device).masked_scatter(positions, token_logp)
    entropy = None
    if with_entropy:  # from the same log-softmax: −Σ p log p
        token_entropy = entropy_from_logprobs(log_probs if entropy_grad else log_probs.detach())
        entropy = torch.zeros_like(logp).masked_scatter(positions, token_entropy)
    return logp, entropy, hidden
