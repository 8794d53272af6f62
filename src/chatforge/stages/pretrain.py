"""Pretrain a causal LM from scratch, or continue pretraining one, on a mixture of text corpora.

Reads text / JSONL / Parquet / HF dataset directories (or a built-in corpus; chat records through
the chat template), tokenizes each source once into a memory-mapped cache, and trains on
fixed-length rows packed without cross-talk between documents. Sources mix by weight, the weights
can change by stage (e.g. high-quality and SFT data in the anneal stage), and `data.replay` keeps a
fraction of an old corpus in every batch.

Continued pretraining starts from `init_from` (a Hugging Face model directory or a checkpoint
directory) with a fresh optimizer and schedule, so the LR re-warms and re-decays over this run.
`domains` are scored before and after training (bits-per-byte, knowledge test): the forgetting table.
`mode=lora` continues pretraining through LoRA adapters on the frozen model (merged into final/),
one of the forgetting remedies docs/science.md compares with replay and EWC.

    chatforge pretrain                                  # ~10M model on the built-in corpus
    chatforge pretrain cfg.yaml train.max_steps=500 optim.lr=6e-4 schedule.kind=wsd
    chatforge pretrain examples/continual/continue_b_replay.yaml     # world A -> world B, 5% replay
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator

from chatforge.config.base import StrictModel
from chatforge.data.lm_data import DataConfig, LMData, prepare_lm_data
from chatforge.engine.config import OptimConfig, TrainConfig
from chatforge.engine.ewc import EWCConfig, with_ewc
from chatforge.engine.loop import Engine, StepOutput
from chatforge.engine.schedules import ScheduleConfig, phases
from chatforge.errors import ChatforgeError, ConfigError
from chatforge.evaluation.domains import DomainEval, compare, evaluate_domains, format_domain_table
from chatforge.losses.lm import IGNORE_INDEX, token_nll_sum
from chatforge.models.build import ModelConfig, build_model, count_parameters, flops_per_token
from chatforge.models.embeddings import NewRowsConfig
from chatforge.models.logprobs import check_isolation, lm_forward
from chatforge.run_dir import RejectLog, RunDir
from chatforge.sft.modes import LoraSettings
from chatforge.stages._training import Context, Plan, Trained, TrainingStage, default_schedule, train
from chatforge.tokenizer.train import TokenizerConfig


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
    schedule: ScheduleConfig = Field(default_factory=default_schedule(kind="cosine", warmup_steps=20, min_lr_ratio=0.1), description="LR schedule")
    final_eval_documents: int = Field(
        200, ge=1, description="held-out documents per source scored for bits-per-byte at the end"
    )
    domains: list[DomainEval] = Field(
        default_factory=list,
        description="domains scored before and after training (bits-per-byte, knowledge test): the forgetting table",
    )
    domains_before: bool = Field(True, description="also score the domains before training (needed for deltas)")
    new_rows: NewRowsConfig | None = Field(
        None, description="train only the embedding rows `chatforge tokenizer extend` added (old rows bit-identical)"
    )
    ewc: EWCConfig | None = Field(
        None, description="elastic weight consolidation: a Fisher-weighted pull towards the starting weights (docs/science.md)"
    )
    mode: Literal["full", "lora"] = Field(
        "full", description="full: train every weight; lora: LoRA adapters on a frozen model (continued pretraining "
        "that keeps the old weights; merged into final/)",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="mode=lora settings")

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.init_from and self.model.path:
            raise ValueError("set init_from or model.path, not both (init_from continues from a model or checkpoint)")
        if self.mode == "lora" and self.new_rows is not None:
            raise ValueError("mode=lora and new_rows both choose what trains: set one of them")
        if self.mode == "lora" and not (self.init_from or self.model.path):
            raise ValueError("mode=lora adapts an existing model: set init_from (or model.path)")
        return self


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
        tok_cfg = tok_cfg.model_copy(update={"sources": cfg.data.all_sources()})
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


def _new_rows_only(cfg: Config, model: torch.nn.Module, info):
    """`new_rows`: mask the gradients of the old embedding rows (and freeze the rest); else None."""
    from chatforge.models.embeddings import train_new_rows

    if cfg.new_rows is None:
        return None
    if info.enabled and cfg.train.distributed == "fsdp2":
        raise ConfigError("new_rows with train.distributed=fsdp2 is not supported (the row mask would see shards); use ddp")
    return train_new_rows(model, cfg.new_rows, _hf_dir_of(cfg.init_from) or cfg.model.path)


class PretrainStage(TrainingStage):
    def prepare(self, ctx: Context) -> Plan:
        from chatforge.engine.distributed import main_process_first

        cfg, say = ctx.cfg, ctx.say
        with main_process_first(ctx.info):
            tokenizer = _resolve_tokenizer(cfg, ctx.run_dir, ctx.rejects)
            starts = {p.name: p.start for p in phases(cfg.schedule, cfg.train.max_steps)}
            self.data = data = prepare_lm_data(cfg.data, tokenizer, ctx.rejects, cfg.train.seed, cfg.train.max_steps, starts, say)
        model = _build(cfg, tokenizer)
        self.frozen = _new_rows_only(cfg, model, ctx.info)
        if cfg.data.packing == "isolated":
            check_isolation(model, len(tokenizer))
        stream = data.stream(cfg.train.micro_batch_size, ctx.rows_per_step, cfg.train.seed, ctx.info.rank, ctx.info.world_size)
        objective = with_ewc(cfg.ewc, LanguageModelling(data.names), model, tokenizer, ctx, cfg.data.seq_len)
        return Plan(
            model, objective, stream, tokenizer,
            evaluate=(lambda m: held_out_loss(m, data, cfg.train.micro_batch_size)) if data.has_val() else None,
            # new_rows sets requires_grad itself; otherwise the mode (full or LoRA adapters) is applied
            mode=None if self.frozen else cfg.mode, flops_per_token=flops_per_token(model, cfg.data.seq_len),
            param_groups=self.frozen.param_groups if self.frozen else None,
        )

    def started(self, ctx: Context, plan: Plan, engine: Engine) -> None:
        cfg, data, say = ctx.cfg, self.data, ctx.say
        if self.frozen:
            self.frozen.check_optimizer(engine.optimizer)
            say(f"new_rows: training embedding rows {self.frozen.num_old}..{len(plan.tokenizer) - 1} only; rows below stay as they are")
        say(
            f"model: {count_parameters(plan.model) / 1e6:.2f}M parameters | corpus: {data.train_tokens:,} train tokens in "
            f"{len(data.names)} source(s) | {ctx.rows_per_step} x {cfg.data.seq_len} tokens per step x "
            f"{cfg.train.max_steps} steps | packing: {cfg.data.packing}"
        )
        if len(data.names) > 1 or cfg.data.stages:
            say("mixture:\n  " + "\n  ".join(data.plan.describe()))
        epochs = data.expected_epochs(cfg.train.max_steps, ctx.rows_per_step)
        say("expected epochs per source: " + ", ".join(f"{n} {e:.2f}" for n, e in epochs.items()))
        want = cfg.domains and cfg.domains_before
        self.before = _domains_before(cfg, engine, plan.tokenizer, ctx.run_dir, ctx.rejects) if want else None

    def finish(self, ctx: Context, plan: Plan, trained: Trained) -> dict:
        cfg, data, engine, result = ctx.cfg, self.data, trained.engine, trained.result
        summary = {
            "train_tokens_seen": engine.tokens_seen,
            "train_flops": engine.flops_per_token * engine.tokens_seen,
            "final_train_loss": result.last_metrics.get("loss"),
            **{k.replace("/", "_"): v for k, v in result.eval_metrics.items()},
            "mixture": {
                "planned": {name: dict(zip(data.plan.names, w.round(6).tolist())) for _, name, w in data.plan.stages},
                "stage_starts": {name: start for start, name, _ in data.plan.stages},
                "observed_rows": plan.batches.observed_shares(),
                "epochs": plan.batches.epochs(),
            },
            "long_documents": sum(c.meta["long_documents"] for c in data.caches),
        }
        _heldout_bpb(cfg, data, engine, plan.tokenizer, summary, ctx.say)
        if cfg.domains:
            after = evaluate_domains(engine.model, plan.tokenizer, cfg.domains, cfg.data.seq_len, ctx.rejects)
            summary["domains"] = compare(self.before, after)
            ctx.say(format_domain_table(summary["domains"]))
        return summary

    def closing(self, ctx: Context, summary: dict) -> str:
        return f"done: {ctx.run_dir.final} | plots in {ctx.run_dir.report}"


def run(cfg: Config) -> dict:
    return train(cfg, PretrainStage())


def _domains_before(cfg: Config, engine: Engine, tokenizer, run_dir: RunDir, rejects: RejectLog) -> dict:
    """Domain scores of the starting model, cached in the run so a resumed run does not redo them."""
    path = run_dir.report / "domains_before.json"
    asked = [d.model_dump(mode="json") for d in cfg.domains]
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("domains") == asked:
            return cached["scores"]
    engine.model.eval()
    with torch.no_grad():
        before = evaluate_domains(engine.model, tokenizer, cfg.domains, cfg.data.seq_len, rejects)
    if engine.info.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"domains": asked, "scores": before}, indent=2) + "\n")
    return before


def _heldout_bpb(cfg: Config, data, engine: Engine, tokenizer, summary: dict, say) -> None:
    """Bits-per-byte of each source's held-out documents, pooled and per source, against a unigram baseline."""
    from chatforge.losses.lm import bits_per_byte, perplexity
    from chatforge.models.logprobs import score_texts
    from chatforge.stages.eval_lm import unigram_bpb

    texts_by_source = {}
    for name, cache in zip(data.names, data.caches):
        if cache.meta["val_docs"]:
            lines = cache.val_texts_path.read_text().splitlines()[: cfg.final_eval_documents]
            texts_by_source[name] = [json.loads(line)["text"] for line in lines]
    if not texts_by_source:
        return
    # Every rank scores (an FSDP2 forward needs them all); rank 0 reports. Each source is scored
    # once; the pooled figures add up its sums.
    scored = {
        name: score_texts(engine.model, tokenizer, texts, cfg.data.seq_len, cfg.data.seq_len // 2)
        for name, texts in texts_by_source.items()
    }
    nll = sum(r["nll_nats"] for r in scored.values())
    tokens = sum(r["tokens"] for r in scored.values())
    documents = sum(r["documents"] for r in scored.values())
    bpb = bits_per_byte(nll, sum(r["bytes"] for r in scored.values()))
    all_texts = [t for texts in texts_by_source.values() for t in texts]
    summary.update(
        heldout_bpb=bpb, heldout_ppl=perplexity(nll, tokens), heldout_documents=documents,
        unigram_bpb=unigram_bpb(data.unigram_counts(len(tokenizer)), tokenizer, all_texts),
    )
    if len(scored) > 1:
        summary["heldout_bpb_by_source"] = {name: r["bpb"] for name, r in scored.items()}
    say(
        f"held-out: {bpb:.4f} bits/byte (ppl {summary['heldout_ppl']:.2f}) vs unigram baseline "
        f"{summary['unigram_bpb']:.4f} bits/byte over {documents} documents"
    )


class LanguageModelling:
    """Next-token objective: summed cross-entropy over every label that is not ignored.

    With several sources it also reports each source's share of the step's target tokens
    (`share/<source>`), i.e. the mixture actually trained on.
    """

    def __init__(self, source_names: list[str] | None = None):
        self.source_names = source_names or []

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        logits = lm_forward(model, batch)
        if len(self.source_names) < 2 or "source" not in batch:
            loss_sum, n_tokens = token_nll_sum(logits, batch["labels"])
            return StepOutput(loss_sum, n_tokens)
        labels = batch["labels"]
        per_token = torch.nn.functional.cross_entropy(
            logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
        )
        row_loss, row_tokens = per_token.sum(dim=1), (labels != IGNORE_INDEX).sum(dim=1)
        sums, ratios = {}, {}
        for index, name in enumerate(self.source_names):  # every name every step: ranks all-reduce the same keys
            mine = batch["source"] == index
            sums[f"share/{name}"] = row_tokens[mine].sum()
            ratios[f"loss/{name}"] = (row_loss[mine].detach().sum(), row_tokens[mine].sum())
        return StepOutput(row_loss.sum(), row_tokens.sum(), sums, ratios=ratios)


@torch.no_grad()
def held_out_loss(model: torch.nn.Module, data: LMData, batch_size: int) -> dict[str, float]:
    """val/loss over every source's held-out windows, plus val/<source>/loss for each."""
    from chatforge.losses.lm import perplexity
    from chatforge.models.logprobs import lm_nll_sum

    device = next(model.parameters()).device
    out: dict[str, float] = {}
    total, count = 0.0, 0
    for name, batches, training_source in data.validation_sets(batch_size):
        s_total, s_count = 0.0, 0
        for batch in batches:
            loss_sum, n = lm_nll_sum(model, {k: v.to(device) for k, v in batch.items()})
            s_total, s_count = s_total + loss_sum.item(), s_count + int(n)
        if not s_count:
            continue
        if len(data.names) > 1 or not training_source:
            out[f"val/{name}/loss"] = s_total / s_count
        if training_source:  # val/loss covers the training sources only
            total, count = total + s_total, count + s_count
    if count:
        out = {"val/loss": total / count, "val/ppl": perplexity(total, count)} | out
    return out
