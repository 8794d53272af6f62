"""Language-modelling data of a run: one token cache per source, the mixture stream, validation.

Every source (and every replay source) is tokenized into its own cache, with its own held-out
documents, so that mixture weights can be applied per source and validation loss reported per
source (the old domain's validation loss is the forgetting curve of continued pretraining).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.data.corpus import SourceConfig
from chatforge.data.mixture import (
    MixtureStage,
    MixtureStream,
    ReplayConfig,
    SourceWindows,
    StagePlan,
    eval_batches,
    plan_mixture,
    source_name,
)
from chatforge.data.packing import Packing
from chatforge.data.token_cache import TokenCache, build_token_cache
from chatforge.errors import ConfigError, DataError
from chatforge.run_dir import RejectLog


class DataConfig(StrictModel):
    sources: list[SourceConfig] = Field(
        default_factory=lambda: [SourceConfig(path="builtin:pydoc")],
        description="training corpora; with several, `weight` is each one's expected share of the rows",
    )
    seq_len: int = Field(256, ge=8, description="tokens per training sequence")
    packing: Packing = Field(
        "isolated",
        description="isolated: documents packed into a row never attend to each other; concat: one causal mask per row",
    )
    stages: list[MixtureStage] = Field(
        default_factory=list, description="staged mixture: weights per source from a step / fraction / LR phase on"
    )
    replay: ReplayConfig | None = Field(None, description="mix a fraction of an old corpus into every batch")
    val_fraction: float = Field(0.05, ge=0, lt=1, description="share of each source's documents held out")
    cache_dir: str = Field("runs/.cache/tokens", description="where tokenized corpora are cached (shared by runs)")
    long_documents: Literal["split", "truncate"] = Field(
        "split", description="documents longer than max_doc_tokens: split across sequences or truncate (logged)"
    )
    max_doc_tokens: int | None = Field(None, ge=2, description="length limit for long_documents (default: seq_len + 1)")
    eval_batches: int = Field(16, ge=1, description="validation batches per source per periodic evaluation")
    eval_sources: list[SourceConfig] = Field(
        default_factory=list,
        description="held-out text evaluated every eval_every steps as val/<name>/loss, never trained on "
        "(e.g. the old domain during continued pretraining: the forgetting curve)",
    )

    def all_sources(self) -> list[SourceConfig]:
        return list(self.sources) + (list(self.replay.sources) if self.replay else [])


@dataclass
class LMData:
    cfg: DataConfig
    names: list[str]
    caches: list[TokenCache]
    plan: StagePlan
    extra_eval: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)  # (name, tokens, doc starts)

    @property
    def train_tokens(self) -> int:
        return sum(c.meta["train_tokens"] for c in self.caches)

    def stream(self, batch_size: int, rows_per_step: int, seed: int, rank: int = 0, world_size: int = 1) -> MixtureStream:
        windows = [
            SourceWindows(name, c.tokens("train"), c.doc_offsets("train"), self.cfg.seq_len, seed, i)
            for i, (name, c) in enumerate(zip(self.names, self.caches))
        ]
        return MixtureStream(windows, self.plan, batch_size, rows_per_step, seed, self.cfg.packing, rank, world_size)

    def expected_epochs(self, max_steps: int, rows_per_step: int) -> dict[str, float]:
        rows = self.plan.expected_rows(max_steps, rows_per_step)
        windows = [max((c.meta["train_tokens"] - 1) // self.cfg.seq_len, 1) for c in self.caches]
        return {name: float(r / w) for name, r, w in zip(self.names, rows, windows)}

    def has_val(self) -> bool:
        return any(len(c.tokens("val")) >= self.cfg.seq_len + 1 for c in self.caches) or bool(self.extra_eval)

    def validation_sets(self, batch_size: int):
        """(name, held-out batches, whether it is a training source) of every source with held-out windows
        (the training sources' count in val/loss; `eval_sources` are reported on their own)."""
        streams = [(n, c.tokens("val"), c.doc_offsets("val")) for n, c in zip(self.names, self.caches)]
        for index, (name, tokens, starts) in enumerate(streams + self.extra_eval):
            batches = eval_batches(tokens, starts, self.cfg.seq_len, batch_size, self.cfg.packing, self.cfg.eval_batches)
            yield name, batches, index < len(streams)

    def unigram_counts(self, vocab_size: int) -> np.ndarray:
        counts = np.zeros(vocab_size, dtype=np.int64)
        for cache in self.caches:
            counts += np.bincount(np.asarray(cache.tokens("train"), dtype=np.int64), minlength=vocab_size)[:vocab_size]
        return counts


def prepare_lm_data(
    cfg: DataConfig,
    tokenizer,
    rejects: RejectLog,
    seed: int,
    max_steps: int,
    phase_starts: dict[str, int],
    log=print,
) -> LMData:
    """Tokenize (or reuse) every source's cache and resolve the mixture plan (errors before any training)."""
    sources = cfg.all_sources()
    # Resolve names and weights first: a typo in a stage should not wait for tokenization.
    plan = plan_mixture(cfg.sources, cfg.replay, cfg.stages, max_steps, phase_starts)
    max_doc = cfg.max_doc_tokens or cfg.seq_len + 1
    caches = [
        build_token_cache([s], tokenizer, cfg.cache_dir, rejects, cfg.val_fraction, seed, max_doc, cfg.long_documents, log)
        for s in sources
    ]
    names = [source_name(s) for s in sources]
    extra = []
    for source in cfg.eval_sources:
        name = source_name(source)
        if name in names or name in [e[0] for e in extra]:
            raise ConfigError(f"data.eval_sources: name {name!r} is taken; give the source a distinct `name:`")
        extra.append((name, *_tokenize_eval_source(source, tokenizer, rejects)))
    return LMData(cfg, names, caches, plan, extra)


def _tokenize_eval_source(source: SourceConfig, tokenizer, rejects: RejectLog) -> tuple[np.ndarray, np.ndarray]:
    """All documents of a held-out source as one stream ([bos] + tokens + [eos] each) with document starts."""
    from chatforge.data.corpus import read_documents
    from chatforge.data.token_cache import render_chat, with_bos_eos

    docs = list(read_documents([source], rejects))
    if not docs:
        raise DataError(f"data.eval_sources: no usable documents in {source.path}")
    texts = [render_chat(tokenizer, d) if d.messages is not None else d.text for d in docs]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id]
    ids = [with_bos_eos(x, bos, eos) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    starts = np.cumsum([0] + [len(x) for x in ids]).astype(np.int64)
    return np.concatenate([np.asarray(x, dtype=np.int64) for x in ids]), starts
