"""Language modelling: perplexity and bits-per-byte on held-out text (the `eval-lm` scorer)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from chatforge.data.corpus import SourceConfig, read_documents
from chatforge.errors import DataError
from chatforge.evaluation.tasks.base import ModelContext, TaskBase


class LmTask(TaskBase):
    kind: Literal["lm"] = "lm"
    data: list[SourceConfig] = Field(min_length=1, description="held-out text sources")
    max_documents: int | None = Field(200, ge=1, description="score the first N documents (None: all)")
    max_len: int = Field(512, ge=8, description="tokens per scoring window")
    stride: int = Field(256, ge=1, description="new targets per window for long documents")
    batch_size: int = Field(8, ge=1, description="windows per forward pass")


def run(ctx: ModelContext, cfg: LmTask) -> dict:
    from chatforge.models.logprobs import score_texts

    texts = []
    for doc in read_documents(cfg.data, ctx.rejects):
        texts.append(doc.text)
        if cfg.max_documents is not None and len(texts) >= cfg.max_documents:
            break
    if not texts:
        raise DataError(f"lm task: no usable documents in {', '.join(s.path for s in cfg.data)}")
    max_len = min(cfg.max_len, getattr(ctx.model.config, "max_position_embeddings", cfg.max_len) or cfg.max_len)
    scored = score_texts(ctx.model, ctx.tokenizer, texts, max_len, min(cfg.stride, max_len - 1), cfg.batch_size)
    return {"metrics": {"ppl": scored["ppl"], "bpb": scored["bpb"]}, "details": scored}
