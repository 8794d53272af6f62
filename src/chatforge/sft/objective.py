"""The SFT loss: weighted next-token NLL over the supervised (answer) tokens of SFT rows.

Only the supervised positions are scored, so only they need logits. Where the model's logits are
`lm_head(decoder(...).last_hidden_state)` (Llama, Falcon, ... and their LoRA-wrapped forms), the
objective runs the decoder, gathers the final hidden states at the positions whose label is not
IGNORE_INDEX and applies the LM head and the cross-entropy to those alone: the (rows, length, vocab)
logits of the prompts, the padding and the system turns are never built. On the CPU demo (llama-10m,
vocabulary 8192, world instructions padded one per row) about a quarter of the non-pad positions are
answer tokens. The loss is the same sum over the same tokens; only the order of the float additions
in the head's gradient changes (tests/test_sft_objective.py compares both paths).

Models whose head is not separable this way (logit scaling or soft-capping in the config, no
`get_output_embeddings()`), and models under a wrapper whose own forward must run (DDP, FSDP2,
`torch.compile`), take the full path through `lm_forward`. Both forwards live in `models.logprobs`.
"""

from __future__ import annotations

import torch

from chatforge.engine.loop import StepOutput
from chatforge.losses.lm import IGNORE_INDEX, token_nll
from chatforge.models.logprobs import decoder_hidden_states, lm_forward, separable_head
from chatforge.sft.mixing import PRETRAIN_ROW, SFT_ROW


class SFTObjective:
    """`objective(model, batch) -> StepOutput(Σ w_t NLL_t, supervised tokens)` for `SFTBatches` rows.

    Rows already carry shifted `labels`, `loss_weights`, and `position_ids` (pack) or `attention_mask`
    (pad), so the logits at position t are scored against `labels[t]` directly.
    """

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        parts = separable_head(model)
        labels, weights = batch["labels"], batch["loss_weights"]
        kinds = batch["row_kind"][:, None].expand_as(labels) if "row_kind" in batch else None
        if parts is None:
            logits = lm_forward(model, batch)
        else:
            decoder, head = parts
            supervised = labels != IGNORE_INDEX
            hidden = decoder_hidden_states(model, decoder, batch)
            logits = head(hidden[supervised])  # (supervised tokens, vocab)
            labels, weights = labels[supervised], weights[supervised]
            kinds = kinds[supervised] if kinds is not None else None
        nll, counted = token_nll(logits, labels)
        out = StepOutput((nll * weights.reshape(-1).to(nll.dtype) * counted).sum(), counted.sum())
        if kinds is not None:  # rows mixed from pretraining text (sft.mixing): each kind's own mean NLL
            kinds = kinds.reshape(-1)
            for name, kind in (("sft", SFT_ROW), ("pretrain", PRETRAIN_ROW)):
                mine = counted & (kinds == kind)
                out.ratios[f"loss/{name}"] = ((nll.detach() * mine).sum(), mine.sum())
        return out
