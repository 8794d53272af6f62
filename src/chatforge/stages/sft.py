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

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.dynamics.config import DynamicsConfig
from chatforge.engine.config import OptimConfig, TrainConfig
from chatforge.engine.ewc import EWCConfig, with_ewc
from chatforge.engine.schedules import ScheduleConfig
from chatforge.errors import ConfigError
from chatforge.evaluation.instructions import InstructionEval, exact_match, format_exact_match_table
from chatforge.losses.lm import IGNORE_INDEX
from chatforge.run_dir import RejectLog
from chatforge.sft.crlft import CRLFTConfig
from chatforge.sft.formats import ChatSourceConfig, SystemPrompts
from chatforge.sft.masking import MaskSource, Truncation
from chatforge.sft.mixing import PretrainMix
from chatforge.sft.modes import FreezeSettings, FullThenLoraSettings, LoraSettings, Mode
from chatforge.stages._training import Plan, TrainingStage, default_schedule, load_causal_lm, train

if TYPE_CHECKING:
    from chatforge.stages._training import Context, Trained


class SFTDataConfig(StrictModel):
    sources: list[ChatSourceConfig] = Field(default_factory=list, description="training conversations: [{path, format, split}] (docs/data_formats.md)")
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
        default_factory=default_schedule(kind="cosine", warmup_ratio=0.03), description="LR schedule (default cosine, 3% warmup)"
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
    ewc: EWCConfig | None = Field(
        None, description="elastic weight consolidation: a Fisher-weighted pull towards the base model's weights (docs/science.md)"
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


class SFTStage(TrainingStage):
    dynamics_title = "SFT learning dynamics"

    def check(self, cfg: Config) -> None:
        if not cfg.data.sources:
            raise ConfigError("data.sources is empty: give at least one file of conversations")

    def prepare(self, ctx: Context) -> Plan:
        from chatforge.models.logprobs import check_isolation
        from chatforge.sft.batches import SFTBatches
        from chatforge.sft.objective import SFTObjective
        from chatforge.tokenizer.load import load_tokenizer

        cfg, rejects = ctx.cfg, ctx.rejects
        tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
        examples, stats = load_examples(cfg, cfg.data.sources, tokenizer, rejects)
        val_examples, val_stats = load_examples(cfg, cfg.data.val_sources, tokenizer, rejects) if cfg.data.val_sources else ([], {})
        model = load_causal_lm(cfg.model, tokenizer)
        if cfg.data.packing == "pack":
            check_isolation(model, len(tokenizer))
        want_base = cfg.eval and cfg.eval_before and ctx.is_main
        self.base_eval = exact_match(model, tokenizer, cfg.eval, rejects=rejects) if want_base else None
        batches = SFTBatches(
            examples, cfg.train.micro_batch_size, cfg.data.seq_len, tokenizer.pad_token_id, cfg.data.packing,
            seed=cfg.train.seed, rank=ctx.info.rank, world_size=ctx.info.world_size,
            group_by_length=cfg.data.group_by_length, rows_per_step=ctx.rows_per_step,
        )
        evaluate = None
        if val_examples:
            def evaluate(m):
                return validation_loss(
                    m, val_examples, cfg.data.seq_len, tokenizer.pad_token_id, cfg.train.micro_batch_size, cfg.data.packing
                )
        ctx.say(
            f"sft ({cfg.mode}): {stats['examples']} conversations, {stats['supervised_tokens']:,} answer tokens of "
            f"{stats['tokens']:,} | {batches.rows_per_epoch()} rows of {cfg.data.seq_len} per epoch ({cfg.data.packing}) | "
            f"{ctx.rows_per_step} rows per step x {cfg.train.max_steps} steps "
            f"(~{cfg.train.max_steps * ctx.rows_per_step / batches.rows_per_epoch():.2f} epochs)"
        )
        if cfg.data.pretrain_mix is not None:
            batches = _with_pretraining(cfg, batches, tokenizer, rejects, ctx.say)
        objective = with_ewc(cfg.ewc, SFTObjective(), model, tokenizer, ctx, cfg.data.seq_len)
        return Plan(
            model, objective, batches, tokenizer, evaluate, export_tokenizer=_export_tokenizer(cfg, tokenizer),
            summary={"train": stats, "val": val_stats or None},
        )

    def finish(self, ctx: Context, plan: Plan, trained: Trained) -> dict:
        from chatforge.tokenizer.load import load_tokenizer

        cfg, result, final_eval = ctx.cfg, trained.result, None
        if cfg.eval and ctx.is_main:
            final_model = load_causal_lm(ctx.run_dir.final)
            # The exported tokenizer, so a C-RLFT model is scored through its conditioned template.
            # The eval file's skipped lines are logged once, by the first eval that read it.
            final_eval = exact_match(
                final_model, load_tokenizer(ctx.run_dir.final), cfg.eval, rejects=ctx.rejects if self.base_eval is None else None
            )
            ctx.say(format_exact_match_table(self.base_eval, final_eval))
        return {
            "final_train_loss": result.last_metrics.get("loss"),
            "val_loss": result.eval_metrics.get("val/loss"),
            "train_tokens_seen": trained.engine.tokens_seen,
            "tokens_per_s": trained.tokens_per_s,
            "peak_memory": trained.peak_memory,
            "segments": trained.segments,
            "pretrain_rows_share": plan.batches.observed_share() if cfg.data.pretrain_mix else None,
            "exact_match": {"base": self.base_eval, "sft": final_eval} if final_eval else None,
        }

    def closing(self, ctx: Context, summary: dict) -> str:
        val = f" | val loss {summary['val_loss']:.4f}" if summary["val_loss"] is not None else ""
        loss = summary["final_train_loss"]
        loss = f" | final train loss {loss:.4f}" if loss is not None else ""
        used = summary["train"]["examples"]
        return f"done: {ctx.run_dir.final} | {used} conversations used, {ctx.rejects.total} rejected{loss}{val}"


def run(cfg: Config) -> dict:
    return train(cfg, SFTStage())


def _export_tokenizer(cfg: Config, tokenizer):
    """C-RLFT: final/'s tokenizer renders every conversation as the best class, so generation and
    serving answer as that class without being told; otherwise None (the training tokenizer)."""
    if cfg.crlft is None:
        return None
    import copy

    from chatforge.sft.crlft import conditioned_chat_template

    exported = copy.deepcopy(tokenizer)
    exported.chat_template = conditioned_chat_template(tokenizer.chat_template, cfg.crlft)
    return exported
