"""Pretrain a causal LM from scratch, or continue pretraining one, on text corpora.

Reads text / JSONL / Parquet / HF dataset directories (or a built-in corpus), tokenizes them once
into a memory-mapped cache, and trains on fixed-length sequences with the engine. Continued
pretraining starts from `init_from` (a Hugging Face model directory or a checkpoint directory)
with a fresh optimizer and schedule: the LR re-warms and re-decays over this run.

    chatforge pretrain                                  # ~10M model on the built-in corpus
    chatforge pretrain cfg.yaml train.max_steps=500 optim.lr=6e-4 schedule.kind=wsd
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from chatforge.config.base import StrictModel
from chatforge.data.corpus import SourceConfig
from chatforge.data.sequences import SequenceStream, eval_windows
from chatforge.data.token_cache import build_token_cache
from chatforge.engine.config import OptimConfig, TrainConfig
from chatforge.engine.loop import Engine, StepOutput
from chatforge.engine.schedules import ScheduleConfig
from chatforge.errors import ChatforgeError
from chatforge.losses.lm import perplexity, token_nll_sum
from chatforge.models.build import ModelConfig, build_model, count_parameters, flops_per_token
from chatforge.run_dir import RejectLog, RunDir
from chatforge.tokenizer.train import TokenizerConfig


class DataConfig(StrictModel):
    sources: list[SourceConfig] = Field(
        default_factory=lambda: [SourceConfig(path="builtin:pydoc")], description="training corpora"
    )
    seq_len: int = Field(256, ge=8, description="tokens per training sequence")
    val_fraction: float = Field(0.05, ge=0, lt=1, description="share of documents held out for evaluation")
    cache_dir: str = Field("runs/.cache/tokens", description="where tokenized corpora are cached (shared by runs)")
    long_documents: Literal["split", "truncate"] = Field(
        "split", description="documents longer than max_doc_tokens: split across sequences or truncate (logged)"
    )
    max_doc_tokens: int | None = Field(None, ge=2, description="length limit for long_documents (default: seq_len + 1)")
    eval_batches: int = Field(16, ge=1, description="validation batches per periodic evaluation")


class Config(StrictModel):
    out: str = Field("runs/pretrain", description="run directory")
    tokenizer: str | None = Field(
        None, description="tokenizer directory; default: the one in init_from/model.path, else train one"
    )
    tokenizer_train: TokenizerConfig = Field(
        default_factory=lambda: TokenizerConfig(vocab_size=4096),
        description="how to train a tokenizer when none is given (its sources default to data.sources)",
    )
    init_from: str | None = Field(
        None, description="continue pretraining from this HF model dir or checkpoint dir (fresh optimizer + schedule)"
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=lambda: _default_schedule(), description="LR schedule")
    final_eval_documents: int = Field(200, ge=1, description="held-out documents scored for bits-per-byte at the end")

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.init_from and self.model.path:
            raise ValueError("set init_from or model.path, not both (init_from continues from a model or checkpoint)")
        return self


def _default_schedule():
    from pydantic import TypeAdapter

    return TypeAdapter(ScheduleConfig).validate_python({"kind": "cosine", "warmup_steps": 20, "min_lr_ratio": 0.1})


class LanguageModelling:
    """Next-token objective: summed cross-entropy over every label that is not ignored."""

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        logits = model(input_ids=batch["input_ids"]).logits
        loss_sum, n_tokens = token_nll_sum(logits, batch["labels"])
        return StepOutput(loss_sum, n_tokens)


def _resolve_tokenizer(cfg: Config, run: RunDir, rejects: RejectLog):
    from chatforge.tokenizer.load import load_tokenizer
    from chatforge.tokenizer.train import save_tokenizer, train_tokenizer

    for candidate in (cfg.tokenizer, cfg.model.path, _hf_dir_of(cfg.init_from)):
        if candidate:
            return load_tokenizer(candidate)
    tok_dir = run.root / "tokenizer"
    if (tok_dir / "tokenizer.json").is_file():
        return load_tokenizer(tok_dir)
    tok_cfg = cfg.tokenizer_train
    if "sources" not in tok_cfg.model_fields_set:
        tok_cfg = tok_cfg.model_copy(update={"sources": cfg.data.sources})
    tok_cfg = tok_cfg.model_copy(update={"out": str(tok_dir)})
    print(f"training a {tok_cfg.kind} tokenizer (vocab {tok_cfg.vocab_size}) -> {tok_dir}")
    tokenizer = train_tokenizer(tok_cfg, rejects)
    save_tokenizer(tokenizer, tok_dir)
    return load_tokenizer(tok_dir)


def _hf_dir_of(path: str | None) -> str | None:
    """init_from may be a HF model dir (has config.json) or an engine checkpoint (model.safetensors only)."""
    if path and (Path(path) / "config.json").is_file():
        return path
    return None


def _build(cfg: Config, tokenizer) -> torch.nn.Module:
    from chatforge.engine.checkpoint import load_model_weights

    if cfg.init_from and _hf_dir_of(cfg.init_from):
        return build_model(cfg.model.model_copy(update={"path": cfg.init_from}), tokenizer)
    model = build_model(cfg.model, tokenizer, seed=cfg.train.seed)
    if cfg.init_from:
        ckpt = Path(cfg.init_from)
        if not (ckpt / "model.safetensors").is_file():
            raise ChatforgeError(f"init_from {ckpt}: neither a HF model directory nor a checkpoint directory")
        load_model_weights(ckpt, model)
    return model


def run(cfg: Config) -> dict:
    from chatforge.engine.distributed import init
    from chatforge.stages.eval_lm import score_texts, unigram_bpb

    info, _ = init(cfg.train.device)
    run_dir = RunDir.create(cfg.out)
    if info.is_main:
        run_dir.write_config(cfg)
    torch.manual_seed(cfg.train.seed)
    with RejectLog(run_dir.rejected if info.is_main else None) as rejects:
        tokenizer = _resolve_tokenizer(cfg, run_dir, rejects)
        max_doc = cfg.data.max_doc_tokens or cfg.data.seq_len + 1
        cache = build_token_cache(
            cfg.data.sources, tokenizer, cfg.data.cache_dir, rejects, cfg.data.val_fraction, cfg.train.seed,
            max_doc, cfg.data.long_documents, log=print if info.is_main else (lambda *_: None),
        )
        if rejects.total and info.is_main:
            print(rejects.summary_line())
    model = _build(cfg, tokenizer)
    n_params = count_parameters(model)
    stream = SequenceStream(
        cache.tokens("train"), cfg.data.seq_len, cfg.train.micro_batch_size, cfg.train.seed, info.rank, info.world_size
    )
    val_tokens = cache.tokens("val")

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        total, count = 0.0, 0
        device = next(m.parameters()).device
        for batch in eval_windows(val_tokens, cfg.data.seq_len, cfg.train.micro_batch_size, cfg.data.eval_batches):
            loss_sum, n = token_nll_sum(m(input_ids=batch["input_ids"].to(device)).logits, batch["labels"].to(device))
            total, count = total + loss_sum.item(), count + int(n)
        return {"val/loss": total / count, "val/ppl": perplexity(total, count)} if count else {}

    has_val = len(val_tokens) > cfg.data.seq_len + 1
    engine = Engine(
        model, LanguageModelling(), stream, cfg.train, cfg.optim, cfg.schedule, run_dir,
        evaluate=evaluate if has_val else None,
        flops_per_token=flops_per_token(model, cfg.data.seq_len),
        log_config=cfg.model_dump(mode="json"), name=run_dir.root.name,
    )
    if info.is_main:
        global_batch = cfg.train.micro_batch_size * cfg.train.grad_accum_steps * info.world_size
        print(
            f"model: {n_params / 1e6:.2f}M parameters | corpus: {cache.meta['train_tokens']:,} train tokens | "
            f"{global_batch} x {cfg.data.seq_len} tokens per step x {cfg.train.max_steps} steps"
        )
    result = engine.fit()
    engine.export(run_dir.final, tokenizer)
    summary = {
        "steps": result.step,
        "parameters": n_params,
        "train_tokens_seen": engine.tokens_seen,
        "final_train_loss": result.last_metrics.get("loss"),
        **{k.replace("/", "_"): v for k, v in result.eval_metrics.items()},
        "rejected": dict(rejects.counts),
        "long_documents": cache.meta["long_documents"],
    }
    if cache.meta["val_docs"]:
        # Every rank scores (an FSDP2 forward needs them all); rank 0 reports.
        texts = [json.loads(line)["text"] for line in cache.val_texts_path.read_text().splitlines()]
        texts = texts[: cfg.final_eval_documents]
        scored = score_texts(engine.model, tokenizer, texts, cfg.data.seq_len, cfg.data.seq_len // 2)
        counts = np.bincount(np.asarray(cache.tokens("train"), dtype=np.int64), minlength=len(tokenizer))
        summary.update(
            heldout_bpb=scored["bpb"], heldout_ppl=scored["ppl"], heldout_documents=scored["documents"],
            unigram_bpb=unigram_bpb(counts, tokenizer, texts),
        )
        if info.is_main:
            print(
                f"held-out: {scored['bpb']:.4f} bits/byte (ppl {scored['ppl']:.2f}) vs unigram baseline "
                f"{summary['unigram_bpb']:.4f} bits/byte over {scored['documents']} documents"
            )
    if info.is_main:
        run_dir.write_summary(summary)
        print(f"done: {run_dir.final} | plots in {run_dir.report}")
    return summary

