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
`torch.compile`), take the full path through `data.packing.lm_forward`.
"""

from __future__ import annotations

import torch

from chatforge.data.packing import attention_kind, lm_forward
from chatforge.engine.loop import StepOutput
from chatforge.losses.lm import IGNORE_INDEX, token_nll
from chatforge.sft.mixing import PRETRAIN_ROW, SFT_ROW

# Config fields through which a `transformers` model changes its logits after the LM head.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier", "lm_head_multiplier")


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


def separable_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(decoder, lm_head) of a causal LM whose logits are exactly `lm_head(decoder(...)[0])`, else None."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel) or type(model).__name__.startswith("FSDP"):
        return None  # their forward hooks (gradient sync, unsharding) must run
    if getattr(model, "_compiled_call_impl", None) is not None:
        return None  # model.compile() compiles the whole forward; calling its parts would bypass it
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wrappers
    config = getattr(base, "config", None)
    if config is None or not hasattr(base, "get_output_embeddings"):
        return None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if any(getattr(text_config, name, None) not in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS):
        return None
    decoder = getattr(base, getattr(base, "base_model_prefix", "") or "", None)
    head = base.get_output_embeddings()
    if not isinstance(decoder, torch.nn.Module) or decoder is base or not isinstance(head, torch.nn.Module):
        return None
    return decoder, head


def decoder_hidden_states(model: torch.nn.Module, decoder: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(rows, length, hidden) final hidden states, with `lm_forward`'s packed/padded semantics."""
    if "position_ids" not in batch:
        mask = batch.get("attention_mask")  # padded rows (SFT's pad mode)
        return decoder(input_ids=batch["input_ids"], attention_mask=mask, use_cache=False)[0]
    if attention_kind(model).startswith("flash_attention") and batch["input_ids"].shape[0] > 1:
        # as in lm_forward: FlashAttention separates packed documents only in a batch of one row
        rows, length = batch["input_ids"].shape
        flat = decoder(input_ids=batch["input_ids"].reshape(1, -1), position_ids=batch["position_ids"].reshape(1, -1), use_cache=False)[0]
        return flat.reshape(rows, length, -1)
    # use_cache=False: with a cache, transformers skips the packed-sequence mask.
    return decoder(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)[0]
