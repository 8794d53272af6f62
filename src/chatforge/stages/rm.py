"""Reward model: a causal LM with a scalar head, trained on preference pairs and K-wise rankings.

Loads a base or SFT model directory as `AutoModelForSequenceClassification(num_labels=1)` (a fresh
`score` head on the last non-pad token; `chatforge.rm.model`), reads pairs and rankings
(`chatforge.rm.data`), scores every response of a micro-batch in one forward (`data.packing`: packed
into rows without padding, each group's shared prompt computed once by default; or one right-padded
row each) and trains with the engine on the Bradley–Terry (`loss=bt`) or InstructGPT K-wise
(`loss=kwise`) loss, with an optional margin from the gold-reward difference and optional reward
centring (`chatforge.losses.reward`).
Held-out pairs give RewardBench-style accuracy per category and kind and agreement with the gold
reward; held-out rankings give pairwise accuracy, top-1 and rank correlations
(`chatforge.rm.evaluate`). `final/` reloads with plain `AutoModelForSequenceClassification`.

    chatforge rm model=runs/sft/final data.sources='[{path: world/preferences/pairs_train.jsonl}]'
    chatforge rm examples/rm/world_rm.yaml loss=bt mode=lora
"""

from __future__ import annotations

from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.engine.config import OptimConfig, TrainConfig
from chatforge.engine.schedules import ScheduleConfig
from chatforge.errors import ConfigError
from chatforge.rm.data import Packing, PreferenceSourceConfig, Truncation
from chatforge.rm.model import RMMode
from chatforge.rm.objective import Loss
from chatforge.run_dir import RejectLog
from chatforge.sft.modes import LoraSettings
from chatforge.stages._training import Context, Plan, Trained, TrainingStage, default_schedule, train


class RMDataConfig(StrictModel):
    sources: list[PreferenceSourceConfig] = Field(default_factory=list, description="training pairs and/or rankings: [{path, split}] (docs/data_formats.md)")
    val_sources: list[PreferenceSourceConfig] = Field(
        default_factory=list, description="held-out pairs and/or rankings: accuracy, gold agreement, rank correlation"
    )
    max_length: int = Field(512, ge=8, description="tokens per rendered prompt + response")
    truncation: Truncation = Field(
        "drop", description="a longer response: drop rejects the record, left keeps the last max_length tokens"
    )
    packing: Packing = Field(
        "shared_prefix",
        description="shared_prefix: a micro-batch's responses packed into rows, each prompt once for all its "
        "responses; pack: packed, every response whole (any attention kernel, FlashAttention too); pad: one per row",
    )
    gold_field: str | None = Field(
        "reward", description="gold rewards: pairs' chosen_<field>/rejected_<field>, rankings' <field>s (None: none)"
    )


class Config(StrictModel):
    out: str = Field("runs/rm", description="run directory")
    model: str = Field(description="Hugging Face causal-LM (or sequence-classifier) directory to start from (required)")
    tokenizer: str | None = Field(None, description="tokenizer directory; default: the model directory")
    data: RMDataConfig = Field(default_factory=RMDataConfig)
    loss: Loss = Field(
        "kwise", description="kwise: one element per ranking, mean over its pairs (InstructGPT); bt: every pair its own element"
    )
    margin_scale: float | None = Field(
        None, ge=0, description="margin m = scale x (gold_better - gold_worse) in -log sigmoid(r_w - r_l - m) (None: no margin)"
    )
    center_coefficient: float = Field(0.0, ge=0, description="reward centring lambda x (r_w + r_l)^2 per pair (0: off)")
    mode: RMMode = Field("full", description="full: train everything; lora: adapters + a fully trained score head")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="mode=lora settings")
    # Defaults sized for the task world (400 pairs + 150 rankings, a ~10M model): 8 groups (pairs or
    # rankings, not sequences) per step, 70 steps = about one epoch, as InstructGPT trains its RM for one
    # (a second over-fits); a fresh head on a pretrained trunk wants a small LR (InstructGPT: 9e-6 at 6B).
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(max_steps=70, micro_batch_size=8, eval_every=0))
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=5e-5, weight_decay=0.0))
    schedule: ScheduleConfig = Field(
        default_factory=default_schedule(kind="cosine", warmup_ratio=0.05), description="LR schedule (default cosine, 5% warmup)"
    )
    eval_batch_size: int = Field(16, ge=1, description="groups per forward when scoring held-out data")
    eval_before: bool = Field(True, description="also evaluate the starting model (its head is random: ~chance)")


def load_groups(cfg: Config, sources: list[PreferenceSourceConfig], tokenizer, rejects: RejectLog):
    from chatforge.rm.data import encode_groups, read_groups

    groups = read_groups(sources, rejects, cfg.data.gold_field, need_gold=cfg.margin_scale is not None)
    groups, cut = encode_groups(groups, tokenizer, cfg.data.max_length, cfg.data.truncation, rejects)
    stats = {
        "pairs": sum(g.is_pair for g in groups), "rankings": sum(not g.is_pair for g in groups),
        "responses": sum(len(g.responses) for g in groups), "truncated_responses": cut,
        "ordered_pairs": sum(sum(a < b for a in g.ranks for b in g.ranks) for g in groups),
    }
    return groups, stats


def evaluation(model, groups, pad_id: int, batch_size: int, packing: Packing = "pad") -> dict[str, float]:
    from chatforge.rm.evaluate import reward_metrics, score_groups

    was_training = model.training
    model.eval()
    metrics = reward_metrics(groups, score_groups(model, groups, pad_id, batch_size, packing))
    model.train(was_training)
    return {f"val/{k}": v for k, v in metrics.items()}


class RewardModelStage(TrainingStage):
    def check(self, cfg: Config) -> None:
        if not cfg.data.sources:
            raise ConfigError("data.sources is empty: give at least one file of preference pairs or rankings")
        if cfg.margin_scale is not None and not cfg.data.gold_field:
            raise ConfigError("margin_scale needs gold rewards: set data.gold_field")

    def prepare(self, ctx: Context) -> Plan:
        from chatforge.rm.data import GroupBatches
        from chatforge.rm.model import check_packed_rewards, load_reward_model
        from chatforge.rm.objective import RMObjective
        from chatforge.tokenizer.load import load_tokenizer

        cfg = ctx.cfg
        tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"the tokenizer of {cfg.tokenizer or cfg.model} has no chat template to render pairs with")
        groups, stats = load_groups(cfg, cfg.data.sources, tokenizer, ctx.rejects)
        val_groups, val_stats = load_groups(cfg, cfg.data.val_sources, tokenizer, ctx.rejects) if cfg.data.val_sources else ([], {})
        model = load_reward_model(cfg.model, tokenizer)
        pad, packing = tokenizer.pad_token_id, cfg.data.packing
        if packing != "pad":
            check_packed_rewards(model, pad, share_prefix=packing == "shared_prefix")
        evaluate = (lambda m: evaluation(m, val_groups, pad, cfg.eval_batch_size, packing)) if val_groups else None
        self.before = evaluate(model) if evaluate and cfg.eval_before and ctx.is_main else None
        batches = GroupBatches(groups, cfg.train.micro_batch_size, pad, cfg.train.seed, ctx.info.rank,
                               ctx.info.world_size, packing)
        self.groups = len(groups)
        epochs = cfg.train.max_steps / batches.steps_per_epoch(cfg.train.grad_accum_steps)

        def describe(trainable: int, total: int) -> str:
            return (
                f"rm ({cfg.mode}, loss={cfg.loss}, packing={packing}): {stats['pairs']} pairs + {stats['rankings']} "
                f"rankings ({stats['ordered_pairs']} ordered pairs, {stats['responses']} responses) | {ctx.rows_per_step} "
                f"groups per step x {cfg.train.max_steps} steps (~{epochs:.2f} epochs) | {trainable:,} of {total:,} "
                "parameters trainable"
            )
        objective = RMObjective(cfg.loss, cfg.margin_scale, cfg.center_coefficient)
        summary = {"loss": cfg.loss, "packing": packing, "margin_scale": cfg.margin_scale,
                   "center_coefficient": cfg.center_coefficient, "train": stats, "val": val_stats or None}
        return Plan(model, objective, batches, tokenizer, evaluate, describe, lora_task="SEQ_CLS", summary=summary)

    def finish(self, ctx: Context, plan: Plan, trained: Trained) -> dict:
        result = trained.result
        return {
            "final_train": {k: v for k, v in result.last_metrics.items() if k in ("loss", "accuracy", "rewards/margin", "rewards/mean")},
            "eval_before": self.before, "eval": result.eval_metrics or None, "peak_memory": result.peak_memory,
        }

    def closing(self, ctx: Context, summary: dict) -> str:
        table = format_eval(self.before, summary["eval"]) + "\n" if summary["eval"] else ""
        return f"{table}done: {ctx.run_dir.final} | {self.groups} groups used, {ctx.rejects.total} rejected"


def run(cfg: Config) -> dict:
    return train(cfg, RewardModelStage())


def format_eval(before: dict[str, float] | None, after: dict[str, float]) -> str:
    rows = [k for k in after if not k.endswith("/count")]
    width = max(len(k) for k in rows)
    lines = [f"{'metric':<{width}}  {'start':>7}  {'trained':>7}"]
    for key in rows:
        start = f"{before[key]:.3f}" if before and key in before else "-"
        lines.append(f"{key:<{width}}  {start:>7}  {after[key]:>7.3f}")
    return "\n".join(lines)
