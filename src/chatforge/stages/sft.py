"""Supervised fine-tuning of a Hugging Face causal LM on chat conversations, answer tokens only.

Reads conversations (OpenAI messages, ShareGPT, Alpaca, prompt/completion; `chatforge.sft.formats`),
renders each with the tokenizer's chat template and supervises only the assistant answers
(`chatforge.sft.masking`), packs them without cross-talk or pads them one per row
(`chatforge.sft.batches`), and trains with the engine: the whole model (`mode=full`), LoRA adapters
(`mode=lora`, merged into `final/` at the end), or the top blocks of a frozen model (`mode=freeze`).
Unusable records go to `rejected.jsonl` with their reason; `report/summary.json` counts them.

    chatforge sft model=runs/pretrain/final data.sources='[{path: world/instructions/train.jsonl}]'
    chatforge sft cfg.yaml mode=lora lora.r=16 train.max_steps=500
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.dynamics.config import DynamicsConfig
from chatforge.engine.config import OptimConfig, TrainConfig
from chatforge.engine.loop import Engine
from chatforge.engine.schedules import ScheduleConfig
from chatforge.errors import ConfigError
from chatforge.evaluation.instructions import InstructionEval, exact_match, format_exact_match_table
from chatforge.losses.lm import IGNORE_INDEX
from chatforge.run_dir import RejectLog, RunDir
from chatforge.sft.crlft import CRLFTConfig
from chatforge.sft.formats import ChatSourceConfig, SystemPrompts
from chatforge.sft.masking import MaskSource, Truncation
from chatforge.sft.mixing import PretrainMix
from chatforge.sft.modes import FreezeSettings, FullThenLoraSettings, LoraSettings, Mode


class SFTDataConfig(StrictModel):
    sources: list[ChatSourceConfig] = Field(default_factory=list, description="training conversations")
    system_prompts: SystemPrompts = Field(
        default_factory=SystemPrompts, description="system prompts added to conversations that have none"
    )
    seq_len: int = Field(512, ge=8, description="tokens per row; longer conversations are truncated")
    packing: Literal["pack", "pad"] = Field(
        "pack", description="pack: several conversations per row, isolated by position ids; pad: one per row"
    )
    truncation: Truncation = Field(
        "right", description="conversations longer than seq_len: right keeps the start, left the end, drop rejects"
    )
    mask_source: MaskSource = Field("auto", description="where the answers are: auto, prefixes or markers")
    group_by_length: bool = Field(True, description="pad mode: batch conversations of similar length")
    val_sources: list[ChatSourceConfig] = Field(
        default_factory=list, description="held-out conversations for a validation loss (answer tokens)"
    )
    pretrain_mix: PretrainMix | None = Field(
        None, description="mix a share of pretraining windows into the rows (every token supervised)"
    )


def _default_schedule():
    from pydantic import TypeAdapter

    return TypeAdapter(ScheduleConfig).validate_python({"kind": "cosine", "warmup_ratio": 0.03})


class Config(StrictModel):
    out: str = Field("runs/sft", description="run directory")
    model: str = Field(description="Hugging Face model directory to fine-tune (required)")
    tokenizer: str | None = Field(None, description="tokenizer directory; default: the model directory")
    data: SFTDataConfig = Field(default_factory=SFTDataConfig)
    mode: Mode = Field(
        "full",
        description="full: train everything; lora: LoRA adapters; freeze: top blocks only; full_then_lora: full, then LoRA",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="mode=lora settings")
    freeze: FreezeSettings = Field(default_factory=FreezeSettings, description="mode=freeze settings")
    full_then_lora: FullThenLoraSettings = Field(
        default_factory=FullThenLoraSettings, description="mode=full_then_lora: when to switch (LoRA settings from lora)"
    )
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(max_steps=200))
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=2e-4, weight_decay=0.0))
    schedule: ScheduleConfig = Field(
        default_factory=lambda: _default_schedule(), description="LR schedule (default cosine, 3% warmup)"
    )
    eval: InstructionEval | None = Field(
        None, description="held-out instructions answered greedily: exact match per task type, base vs fine-tuned"
    )
    eval_before: bool = Field(True, description="also score the base model on eval (the table's base column)")
    crlft: CRLFTConfig | None = Field(
        None, description="C-RLFT: condition on each record's source class and weight its answers by class reward"
    )
    dynamics: DynamicsConfig | None = Field(
        None, description="learning-dynamics probes every N steps -> OUT/dynamics.jsonl (docs/dynamics.md)"
    )


def load_examples(cfg: Config, sources: list[ChatSourceConfig], tokenizer, rejects: RejectLog) -> tuple[list, dict]:
    """`Example`s of `sources` and their statistics (conversations, truncated, supervised tokens)."""
    from chatforge.sft.batches import Example
    from chatforge.sft.formats import read_conversations
    from chatforge.sft.masking import encode_conversations

    conversations = read_conversations(sources, rejects, cfg.data.system_prompts)
    if cfg.crlft is not None:
        conversations = _class_conditioned(conversations, cfg.crlft, rejects)
    examples, truncated, straddling, supervised, tokens = [], 0, 0, 0, 0
    for conversation, enc in encode_conversations(
        tokenizer, conversations, rejects, cfg.data.seq_len, cfg.data.truncation, cfg.data.mask_source
    ):
        weight = cfg.crlft.weight(conversation.extra[cfg.crlft.class_field]) if cfg.crlft else 1.0
        examples.append(Example(enc.input_ids, enc.labels, weight))
        truncated += enc.truncated > 0
        straddling += enc.straddling
        supervised += sum(label != IGNORE_INDEX for label in enc.labels)
        tokens += len(enc.input_ids)
    stats = {
        "examples": len(examples), "truncated": truncated, "straddling_tokens": straddling,
        "supervised_tokens": supervised, "tokens": tokens,
    }
    return examples, stats


def _class_conditioned(conversations, crlft, rejects: RejectLog):
    """C-RLFT: each conversation conditioned on its class; one of an unknown class is rejected."""
    from chatforge.sft.crlft import condition_conversation

    for conversation in conversations:
        conditioned, problem = condition_conversation(conversation, crlft)
        if conditioned is None:
            record = {**conversation.extra, "messages": conversation.messages}
            rejects.add(conversation.source, conversation.where, "unknown_class", problem, record)
            continue
        yield conditioned


def validation_loss(model, examples, seq_len: int, pad_id: int, batch_size: int, packing: str) -> dict[str, float]:
    """Mean answer-token NLL over `examples`, laid out in order (packed or one per row)."""
    from chatforge.sft.batches import SFTBatches
    from chatforge.sft.objective import SFTObjective

    layout = SFTBatches(examples, 1, seq_len, pad_id, packing, group_by_length=False)
    device = next(model.parameters()).device
    objective = SFTObjective()
    loss, count = 0.0, 0
    for rows in layout.in_order(batch_size):
        batch = {k: v.to(device) for k, v in rows.items()}
        out = objective(model, batch)
        loss += float(out.loss_sum)
        count += int(out.count)
    return {"val/loss": loss / max(count, 1)}


def _with_pretraining(cfg: Config, batches, tokenizer, rejects: RejectLog, say):
    """`batches` with `data.pretrain_mix.fraction` of the rows replaced by pretraining windows."""
    from chatforge.sft.mixing import SFTWithPretraining, prepare_pretrain_windows

    mix = cfg.data.pretrain_mix
    data = prepare_pretrain_windows(
        mix, tokenizer, cfg.data.seq_len, cfg.data.packing, rejects, cfg.train.seed, cfg.train.max_steps, say
    )
    windows = data.stream(1, 1, cfg.train.seed)
    expected_rows = mix.fraction * cfg.train.max_steps * batches.rows_per_step
    epochs = expected_rows / sum(source.num_windows for source in windows.sources)
    say(
        f"pretrain_mix: {mix.fraction:.0%} of rows from {', '.join(data.names)} ({data.train_tokens:,} tokens; "
        f"~{expected_rows:,.0f} windows of {cfg.data.seq_len} = {epochs:.2f} epochs), loss weight {mix.loss_weight}"
    )
    return SFTWithPretraining(batches, windows, mix, cfg.train.seed)


def _train(cfg: Config, model, batches, run_dir: RunDir, evaluate, switch: int | None, say, probes=None):
    """Train as `cfg.mode` says: one engine, or for full_then_lora a full segment (steps 1..switch)
    then a LoRA segment (switch+1..max_steps) on one schedule. Returns (last engine, its result, one
    record per segment: mode, steps, trainable parameters, tokens/s, peak memory).

    A resumed full_then_lora run whose checkpoints are already past the switch skips the full
    segment: the LoRA segment's checkpoints hold the whole model (base weights and adapters)."""
    from chatforge.engine import distributed as dist
    from chatforge.engine.checkpoint import list_checkpoints
    from chatforge.sft.modes import apply_mode, trainable_parameters
    from chatforge.sft.objective import SFTObjective

    def fit(mode: str, model, optim: OptimConfig, **segment):
        model = apply_mode(model, mode, cfg.lora, cfg.freeze)
        trainable, total = trainable_parameters(model)
        say(f"{mode}: {trainable:,} of {total:,} parameters trainable ({100 * trainable / total:.2f}%)")
        train_cfg = cfg.train
        if probes is not None:  # dynamics: the probes ride on the evaluate callable (dynamics.hook)
            evaluate_fn, train_cfg = probes.wrap(evaluate, cfg.train)
        engine = Engine(
            model, SFTObjective(), batches, train_cfg, optim, cfg.schedule, run_dir,
            evaluate=evaluate_fn if probes is not None else evaluate,
            log_config=cfg.model_dump(mode="json"), name=run_dir.root.name, **segment,
        )
        if probes is not None:
            probes.attach(engine)
        first = engine.step
        result = engine.fit()
        first = result.resumed_from if result.resumed_from is not None else first
        record = {
            "mode": mode, "steps": [first, result.step], "trainable_parameters": trainable, "parameters": total,
            "tokens_per_s": _median_tokens_per_s(run_dir, first, result.step), "peak_memory": result.peak_memory,
        }
        return engine, result, record

    if switch is None:
        engine, result, record = fit(cfg.mode, model, cfg.optim)
        return engine, result, [record]
    segments, tokens = [], 0
    saved = list_checkpoints(run_dir.checkpoints) if cfg.train.resume != "never" else []
    if not saved or saved[-1] <= switch:
        full, _, record = fit("full", model, cfg.optim, stop_at=switch)
        segments.append(record)
        model, tokens = dist.unwrap(full.model), full.tokens_seen
        del full  # its optimizer state (two moments per weight) is not needed by the LoRA segment
    lora_optim = cfg.optim.model_copy(update={"lr": cfg.full_then_lora.lora_lr or cfg.optim.lr})
    say(f"full_then_lora: switching to LoRA after step {switch} of {cfg.train.max_steps}")
    engine, result, record = fit("lora", model, lora_optim, start_step=switch, start_tokens=tokens)
    return engine, result, [*segments, record]


def _median_tokens_per_s(run_dir: RunDir, first: int, last: int) -> float | None:
    """Median of the logged tokens/s over steps first+1..last (the engine's windowed throughput)."""
    import statistics

    from chatforge.engine.log import read_metrics

    values = [
        row["tokens_per_s"] for row in read_metrics(run_dir.metrics)
        if "tokens_per_s" in row and first < row.get("step", 0) <= last
    ]
    return statistics.median(values) if values else None


def run(cfg: Config) -> dict:
    from transformers import AutoModelForCausalLM

    from chatforge.data.packing import check_isolation
    from chatforge.engine import distributed as dist
    from chatforge.sft.batches import SFTBatches
    from chatforge.sft.modes import export_model
    from chatforge.tokenizer.load import load_tokenizer

    if not cfg.data.sources:
        raise ConfigError("data.sources is empty: give at least one file of conversations")
    info, _ = dist.init(cfg.train.device)
    say = print if info.is_main else (lambda *_, **__: None)
    if cfg.mode in ("lora", "full_then_lora") and info.enabled and cfg.train.distributed == "fsdp2":
        raise ConfigError(f"mode={cfg.mode} with train.distributed=fsdp2 is not supported yet; use ddp")
    switch = cfg.full_then_lora.switch_at(cfg.train.max_steps) if cfg.mode == "full_then_lora" else None
    run_dir = RunDir.create(cfg.out)
    if info.is_main:
        run_dir.write_config(cfg)
    torch.manual_seed(cfg.train.seed)
    with RejectLog(run_dir.rejected if info.is_main else None) as rejects:
        tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
        examples, stats = load_examples(cfg, cfg.data.sources, tokenizer, rejects)
        val_examples, val_stats = (
            load_examples(cfg, cfg.data.val_sources, tokenizer, rejects) if cfg.data.val_sources else ([], {})
        )
        if rejects.total:
            say(rejects.summary_line())
        model = AutoModelForCausalLM.from_pretrained(cfg.model, trust_remote_code=False, dtype=torch.float32)
        vocab = model.get_input_embeddings().weight.shape[0]
        if len(tokenizer) > vocab:
            raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only {vocab}")
        if cfg.data.packing == "pack":
            check_isolation(model, len(tokenizer))
        base_eval = (
            exact_match(model, tokenizer, cfg.eval, rejects=rejects) if cfg.eval and cfg.eval_before and info.is_main else None
        )
        rows_per_step = cfg.train.micro_batch_size * cfg.train.grad_accum_steps * info.world_size
        batches = SFTBatches(
            examples, cfg.train.micro_batch_size, cfg.data.seq_len, tokenizer.pad_token_id, cfg.data.packing,
            seed=cfg.train.seed, rank=info.rank, world_size=info.world_size, group_by_length=cfg.data.group_by_length,
            rows_per_step=rows_per_step,
        )
        evaluate = None
        if val_examples:
            def evaluate(m):
                return validation_loss(
                    m, val_examples, cfg.data.seq_len, tokenizer.pad_token_id, cfg.train.micro_batch_size, cfg.data.packing
                )
        say(
            f"sft ({cfg.mode}): {stats['examples']} conversations, {stats['supervised_tokens']:,} answer tokens of "
            f"{stats['tokens']:,} | {batches.rows_per_epoch()} rows of {cfg.data.seq_len} per epoch ({cfg.data.packing}) | "
            f"{rows_per_step} rows per step x {cfg.train.max_steps} steps "
            f"(~{cfg.train.max_steps * rows_per_step / batches.rows_per_epoch():.2f} epochs)"
        )
        if cfg.data.pretrain_mix is not None:
            batches = _with_pretraining(cfg, batches, tokenizer, rejects, say)
        probes = None
        if cfg.dynamics is not None:
            from chatforge.dynamics.hook import ProbeHook

            probes = ProbeHook(cfg.dynamics, tokenizer, run_dir.root, write=info.is_main, say=say)
        engine, result, segments = _train(cfg, model, batches, run_dir, evaluate, switch, say, probes)
        trainable, total = segments[-1]["trainable_parameters"], segments[-1]["parameters"]
        if cfg.crlft is not None:  # generation and serving answer as the best class without being told
            from chatforge.sft.crlft import conditioned_chat_template

            tokenizer.chat_template = conditioned_chat_template(tokenizer.chat_template, cfg.crlft)
        adapters = cfg.mode in ("lora", "full_then_lora")
        if info.is_main and adapters:
            adapter = run_dir.root / "adapter" if cfg.lora.save_adapter else None
            export_model(dist.unwrap(engine.model), cfg.mode, run_dir.final, tokenizer, adapter)
        if not adapters:
            engine.export(run_dir.final, tokenizer)
        dist.barrier(info)
        final_eval = None
        if cfg.eval and info.is_main:
            final_model = AutoModelForCausalLM.from_pretrained(run_dir.final, dtype=torch.float32)
            # The exported tokenizer, so a C-RLFT model is scored through its conditioned template.
            # The eval file's skipped lines are logged once, by the first eval that read it.
            final_eval = exact_match(
                final_model, load_tokenizer(run_dir.final), cfg.eval, rejects=rejects if base_eval is None else None
            )
            say(format_exact_match_table(base_eval, final_eval))
        summary = {
            "mode": cfg.mode,
            "steps": result.step,
            "trainable_parameters": trainable,
            "parameters": total,
            "train": stats,
            "val": val_stats or None,
            "rejected": dict(rejects.counts),
            "final_train_loss": result.last_metrics.get("loss"),
            "val_loss": result.eval_metrics.get("val/loss"),
            "train_tokens_seen": engine.tokens_seen,
            "tokens_per_s": segments[-1]["tokens_per_s"],
            "peak_memory": max((seg["peak_memory"] for seg in segments), key=lambda m: m.get("peak_bytes", 0)),
            "segments": segments,
            "pretrain_rows_share": batches.observed_share() if cfg.data.pretrain_mix else None,
            "exact_match": {"base": base_eval, "sft": final_eval} if final_eval else None,
            "dynamics": probes.finish(f"{run_dir.root.name}: SFT learning dynamics") if probes is not None else None,
        }
    if info.is_main:
        run_dir.write_summary(summary)
        val = f" | val loss {summary['val_loss']:.4f}" if summary["val_loss"] is not None else ""
        loss = summary["final_train_loss"]
        loss = f" | final train loss {loss:.4f}" if loss is not None else ""
        print(f"done: {run_dir.final} | {stats['examples']} conversations used, {rejects.total} rejected{loss}{val}")
    return summary
