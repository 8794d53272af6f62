"""Perplexity and bits-per-byte of a causal LM on held-out text (scored by `models.logprobs.score_texts`).

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
from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.data.corpus import SourceConfig, read_documents
from chatforge.errors import DataError
from chatforge.models.logprobs import score_texts
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
