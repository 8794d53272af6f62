"""Every model forward a loss or a score needs: logits, answer-only logits, log-probs, LM scoring.

    lm_forward(model, batch)              logits of a packed (position_ids) or padded (attention_mask) batch
    separable_head(model)                 (decoder, lm_head) where logits are exactly lm_head(decoder(...)[0])
    decoder_hidden_states(...)            the decoder's final hidden states, with lm_forward's semantics
    answer_logits(model, batch)           logits at the supervised positions only (labels != IGNORE_INDEX)
    sequence_logps(model, batch)          Σ log p(answer tokens) and the answer token count per row
    token_logps(model, batch)             log p of each supervised token, (rows, length), 0 elsewhere
    score_texts(model, tokenizer, texts)  NLL, tokens, bytes, perplexity and bits-per-byte of documents
    check_isolation(model, vocab_size)    proof on the actual model that packed documents do not see each other

Batches carry `input_ids`, `labels` already shifted (labels[t] is the token at t + 1, IGNORE_INDEX where
not scored) and either `position_ids` (packed rows: documents restart at 0 and never see each other)
or an `attention_mask` (right-padded rows). Where the head is separable, only the supervised positions
go through the LM head, so the (rows, length, vocab) logits of prompts and padding are never built.
Models whose head is not separable (logit scaling or soft-capping in the config, no
`get_output_embeddings()`) and models under a wrapper whose own forward must run (DDP, FSDP2,
`torch.compile`) take the full path through `lm_forward`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from chatforge.errors import ConfigError
from chatforge.losses.lm import IGNORE_INDEX, bits_per_byte, perplexity, token_nll, token_nll_sum

# Config fields through which a `transformers` model changes its logits after the LM head.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier", "lm_head_multiplier")


def attention_kind(model: torch.nn.Module) -> str:
    config = getattr(getattr(model, "module", model), "config", None)
    return str(getattr(config, "_attn_implementation", "") or "")


def lm_forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits for a language-modelling batch, packed (position_ids present) or not."""
    return _forward(model, batch, lambda out: out.logits)


def decoder_hidden_states(model: torch.nn.Module, decoder: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(rows, length, hidden) final hidden states of `decoder`, with `lm_forward`'s packed/padded semantics."""
    return _forward(decoder, batch, lambda out: out[0], kind=attention_kind(model))


def _forward(module: torch.nn.Module, batch: dict[str, torch.Tensor], pick, kind: str | None = None) -> torch.Tensor:
    if "position_ids" not in batch:
        mask = batch.get("attention_mask")  # padded rows
        return pick(module(input_ids=batch["input_ids"], attention_mask=mask, use_cache=False))
    kind = attention_kind(module) if kind is None else kind
    if kind.startswith("flash_attention") and batch["input_ids"].shape[0] > 1:
        # FlashAttention detects packed documents only in a batch of one row; every row starts
        # at position 0, so the rows laid end to end stay apart as variable-length segments.
        rows, length = batch["input_ids"].shape
        flat = module(input_ids=batch["input_ids"].reshape(1, -1), position_ids=batch["position_ids"].reshape(1, -1), use_cache=False)
        return pick(flat).reshape(rows, length, -1)
    # use_cache=False: with a cache, transformers skips the packed-sequence mask.
    return pick(module(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False))


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


def answer_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits at the supervised positions (answer tokens, vocab), the (rows, length) supervised mask)."""
    supervised = batch["labels"] != IGNORE_INDEX
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    parts = separable_head(model)
    if parts is None:
        return lm_forward(model, inputs)[supervised], supervised
    decoder, head = parts
    return head(decoder_hidden_states(model, decoder, inputs)[supervised]), supervised


def sequence_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ log p(answer tokens), answer token count) per row, both (rows,), log-probs in float32."""
    logits, supervised = answer_logits(model, batch)
    nll, _ = token_nll(logits, batch["labels"][supervised])
    rows = supervised.nonzero(as_tuple=True)[0]
    logps = torch.zeros(supervised.shape[0], dtype=nll.dtype, device=nll.device).index_add(0, rows, -nll)
    return logps, supervised.sum(dim=1)


def token_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(rows, length) float32 log p(labels[t] | tokens ≤ t) at the supervised positions, 0 elsewhere
    (the per-token log-probs a policy-gradient or KL term needs; `.sum(1)` is `sequence_logps`)."""
    logits, supervised = answer_logits(model, batch)
    nll, _ = token_nll(logits, batch["labels"][supervised])
    out = torch.zeros(supervised.shape, dtype=nll.dtype, device=nll.device)
    out[supervised] = -nll
    return out


def lm_nll_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed next-token NLL over every label that is not ignored, how many) of a packed or padded batch."""
    return token_nll_sum(lm_forward(model, batch), batch["labels"])


def text_windows(ids: list[int], max_len: int, stride: int) -> Iterable[tuple[list[int], int]]:
    """(window tokens, number of targets to count at the window's end) covering ids[1:] exactly once."""
    if len(ids) <= max_len:
        yield ids, len(ids) - 1
        return
    yield ids[:max_len], max_len - 1
    end = max_len
    while end < len(ids):
        new_end = min(end + stride, len(ids))
        yield ids[new_end - max_len : new_end], new_end - end
        end = new_end


@torch.no_grad()
def score_texts(model, tokenizer, texts: list[str], max_len: int = 512, stride: int = 256, batch_size: int = 8) -> dict:
    """Total NLL (nats), predicted tokens and UTF-8 bytes over `texts`, plus ppl and bits-per-byte.

    Each document is scored on its own as [bos] + text + [eos]; one longer than `max_len` in
    overlapping windows (`stride` new targets per window, the rest as context)."""
    from chatforge.data.padding import pad_sequences

    if stride > max_len - 1:
        stride = max_len - 1
    device = next(model.parameters()).device
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else [tokenizer.eos_token_id]
    eos = [tokenizer.eos_token_id]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    windows = [w for ids in encoded for w in text_windows(bos + ids + eos, max_len, stride)]
    windows.sort(key=lambda w: len(w[0]))  # similar lengths together: less padding
    nll, n_tokens = 0.0, 0
    was_training = model.training
    model.eval()
    for begin in range(0, len(windows), batch_size):
        chunk = windows[begin : begin + batch_size]
        input_ids, mask = pad_sequences([ids for ids, _ in chunk], pad)
        labels = torch.full(input_ids.shape, IGNORE_INDEX, dtype=torch.long)
        for row, (ids, n_new) in enumerate(chunk):
            # labels[t] is the token at t+1; count only the last n_new targets of the window
            targets = torch.tensor(ids[1:])
            labels[row, len(ids) - 1 - n_new : len(ids) - 1] = targets[len(targets) - n_new :]
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        loss_sum, count = token_nll_sum(logits, labels.to(device))
        nll += loss_sum.item()
        n_tokens += int(count.item())
    model.train(was_training)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {
        "documents": len(texts),
        "tokens": n_tokens,
        "bytes": n_bytes,
        "nll_nats": nll,
        "loss": nll / max(n_tokens, 1),
        "ppl": perplexity(nll, n_tokens),
        "bpb": bits_per_byte(nll, n_bytes),
    }


@torch.no_grad()
def check_isolation(model: torch.nn.Module, vocab_size: int, tolerance: float = 1e-3) -> float:
    """Raise ConfigError unless a document packed after another gets the logits it gets alone.

    Runs two short random documents through the model in float32 on its device; returns the largest
    absolute logit difference seen (a few 1e-7 when isolation holds).
    """
    params = next(model.parameters())
    if attention_kind(model).startswith("flash_attention") and params.device.type == "cpu":
        return float("nan")  # FlashAttention runs on GPUs only; transformers' varlen path isolates by position ids
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(4, max(vocab_size, 5), (1, 5), generator=generator)
    second = torch.randint(4, max(vocab_size, 5), (1, 7), generator=generator)
    packed = torch.cat([first, second], dim=1).to(params.device)
    positions = torch.cat([torch.arange(5), torch.arange(7)]).unsqueeze(0).to(params.device)
    was_training = model.training
    model.eval()
    try:
        together = lm_forward(model, {"input_ids": packed, "position_ids": positions})[:, 5:].float()
        alone = lm_forward(model, {"input_ids": second.to(params.device)}).float()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"data.packing=isolated: {type(model).__name__} failed on packed position ids ({exc}); "
            "use data.packing=concat"
        ) from None
    finally:
        model.train(was_training)
    gap = (together - alone).abs().max().item()
    if not gap <= tolerance * max(1.0, alone.abs().max().item()):
        raise ConfigError(
            f"data.packing=isolated: {type(model).__name__} lets packed documents attend to each other "
            f"(logits of a packed document differ from the document alone by {gap:.3g}); its attention "
            "ignores restarted position ids (ALiBi Falcon did before transformers 5.25). Use a Llama-style model or "
            "data.packing=concat"
        )
    return gap
