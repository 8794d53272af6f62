"""Perplexity and bits-per-byte of a causal LM on held-out text.

Each document is scored on its own as [bos] + text + [eos]: every text token and the final eos
are predicted. Documents longer than `max_len` are scored with overlapping windows (`stride` new
targets per window, the rest as context), so no target is predicted without context except the
first. Bits-per-byte divides the total NLL (in bits) by the UTF-8 bytes of the text, so models with
different tokenizers compare on one scale. A unigram model fitted on training text gives the
baseline any real language model must beat.

    chatforge eval-lm model=runs/demo/pretrain/final data.0.path=held_out.jsonl
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.data.corpus import SourceConfig, read_documents
from chatforge.data.padding import pad_sequences
from chatforge.errors import DataError
from chatforge.losses.lm import IGNORE_INDEX, bits_per_byte, perplexity, token_nll_sum
from chatforge.run_dir import RejectLog


class Config(StrictModel):
    model: str = Field(description="Hugging Face model directory to evaluate")
    tokenizer: str | None = Field(None, description="tokenizer directory (default: the model directory)")
    data: list[SourceConfig] = Field(description="held-out text sources")
    unigram_from: list[SourceConfig] = Field(
        default_factory=list, description="training text for the unigram baseline (empty = no baseline)"
    )
    max_len: int = Field(512, ge=8, description="tokens per scoring window")
    stride: int = Field(256, ge=1, description="new targets per window for long documents")
    batch_size: int = Field(8, ge=1, description="windows per forward pass")
    max_documents: int | None = Field(None, ge=1, description="score only the first N documents")
    out: str | None = Field(None, description="write the results as JSON here")
    device: str = Field("auto", description="auto, cpu, cuda")


def _windows(ids: list[int], max_len: int, stride: int) -> Iterable[tuple[list[int], int]]:
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
    """Total NLL (nats), predicted tokens and UTF-8 bytes over `texts`, plus ppl and bits-per-byte."""
    if stride > max_len - 1:
        stride = max_len - 1
    device = next(model.parameters()).device
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else [tokenizer.eos_token_id]
    eos = [tokenizer.eos_token_id]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    windows = [w for ids in encoded for w in _windows(bos + ids + eos, max_len, stride)]
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


def unigram_bpb(token_counts: np.ndarray, tokenizer, texts: list[str]) -> float:
    """Bits-per-byte of an add-one-smoothed unigram model over the same predicted tokens as `score_texts`."""
    probs = (token_counts.astype(np.float64) + 1.0) / (token_counts.sum() + len(token_counts))
    log2p = np.log2(probs)
    eos = tokenizer.eos_token_id
    bits = 0.0
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        bits -= float(log2p[np.asarray(ids + [eos], dtype=np.int64)].sum())
    return bits / sum(len(t.encode("utf-8")) for t in texts)


def count_tokens(tokenizer, texts: Iterable[str], vocab_size: int) -> np.ndarray:
    counts = np.zeros(vocab_size, dtype=np.int64)
    eos = tokenizer.eos_token_id
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        counts += np.bincount(np.asarray(ids + [eos], dtype=np.int64), minlength=vocab_size)[:vocab_size]
    return counts


def format_table(rows: dict[str, dict]) -> str:
    header = f"{'model':<32} {'docs':>6} {'tokens':>9} {'ppl':>10} {'bits/byte':>10}"
    lines = [header, "-" * len(header)]
    for name, r in rows.items():
        lines.append(f"{name[-32:]:<32} {r['documents']:>6} {r['tokens']:>9} {r['ppl']:>10.3f} {r['bpb']:>10.4f}")
    return "\n".join(lines)


def run(cfg: Config) -> dict:
    from chatforge.engine.distributed import init
    from chatforge.models.build import load_pretrained
    from chatforge.tokenizer.load import load_tokenizer

    _, device = init(cfg.device)
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
    model = load_pretrained(cfg.model).to(device)
    rejects_path = Path(cfg.out).with_suffix(".rejected.jsonl") if cfg.out else None
    with RejectLog(rejects_path) as rejects:
        texts = [d.text for d in read_documents(cfg.data, rejects)]
        if cfg.max_documents:
            texts = texts[: cfg.max_documents]
        if not texts:
            raise DataError(f"no usable documents in {', '.join(s.path for s in cfg.data)} ({rejects.summary_line()})")
        result = score_texts(model, tokenizer, texts, cfg.max_len, cfg.stride, cfg.batch_size)
        rows = {cfg.model: result}
        if cfg.unigram_from:
            train_texts = [d.text for d in read_documents(cfg.unigram_from, rejects)]
            counts = count_tokens(tokenizer, train_texts, len(tokenizer))
            result["unigram_bpb"] = unigram_bpb(counts, tokenizer, texts)
        if rejects.total:
            print(rejects.summary_line())
    print(format_table(rows))
    if "unigram_bpb" in result:
        print(f"unigram baseline: {result['unigram_bpb']:.4f} bits/byte")
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(result, indent=2) + "\n")
    if not math.isfinite(result["bpb"]):
        raise DataError("bits-per-byte is not finite: the model produced inf/nan logits")
    return result
