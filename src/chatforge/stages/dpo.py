"""Direct preference optimisation (the DPO family) of a chat model on preference pairs.

Reads pairs (task world or TRL/UltraFeedback layout; `chatforge.dpo.data`), scores chosen and rejected
answers in one forward pass, and trains with the engine on a loss of `chatforge.losses.dpo` (sigmoid,
conservative, hinge, IPO, reference-free, + λ·NLL). The reference log-probs are computed once before
training and cached in OUT/reference_logps.pt (`reference_mode=precomputed`), or by a frozen reference
model every step (`live`). Held-out pairs give preference accuracy and margins; `eval_generation`
scores greedy answers with the task world's gold reward, base vs DPO. Unusable pairs go to
`rejected.jsonl`.

    chatforge dpo model=runs/sft/final data.sources='[{path: world/preferences/pairs_train.jsonl}]'
    chatforge dpo examples/dpo/world_dpo.yaml loss.loss=ipo loss.beta=0.5
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.dpo.config import DPOLossConfig
from chatforge.dpo.data import PairSourceConfig, PairTruncation
from chatforge.dpo.evaluate import GenerationEval
from chatforge.dynamics.config import DynamicsConfig
from chatforge.engine.config import OptimConfig, TrainConfig
from chatforge.engine.schedules import ScheduleConfig
from chatforge.errors import ConfigError
from chatforge.run_dir import RejectLog
from chatforge.sft.masking import MaskSource
from chatforge.sft.modes import LoraSettings
from chatforge.stages._training import Plan, TrainingStage, default_schedule, load_causal_lm, train

if TYPE_CHECKING:
    from chatforge.stages._training import Context, Trained


class DPODataConfig(StrictModel):
    # The keys of sft and rm (one naming across stages); a config with the old keys is told the new ones.
    renamed_keys: ClassVar[dict[str, str]] = {"train": "sources", "eval": "val_sources"}

    sources: list[PairSourceConfig] = Field(default_factory=list, description="training preference pairs: [{path, split}] (docs/data_formats.md)")
    val_sources: list[PairSourceConfig] = Field(
        default_factory=list, description="held-out pairs: preference accuracy and margins (and eval_generation's prompts)"
    )
    max_length: int = Field(512, ge=8, description="tokens per conversation (prompt + one answer) at most")
    truncation: PairTruncation = Field("drop", description="a longer pair: drop rejects it, left cuts the prompt's start")
    mask_source: MaskSource = Field("auto", description="where the answer is: auto, prefixes or markers (sft.masking)")
    group_by_length: bool = Field(True, description="batch training pairs of similar length together (less padding)")


class Config(StrictModel):
    out: str = Field("runs/dpo", description="run directory")
    model: str = Field(description="Hugging Face chat model directory to optimise, usually an SFT run's final/ (required)")
    tokenizer: str | None = Field(None, description="tokenizer directory; default: the model directory")
    reference: str | None = Field(None, description="reference model directory; default: the model itself (its starting weights)")
    reference_mode: Literal["precomputed", "live"] = Field(
        "precomputed",
        description="precomputed: reference log-probs once before training, cached in OUT/reference_logps.pt; "
        "live: a frozen reference model forward every step",
    )
    loss: DPOLossConfig = Field(default_factory=DPOLossConfig)
    data: DPODataConfig = Field(default_factory=DPODataConfig)
    mode: Literal["full", "lora"] = Field("full", description="full: train everything; lora: LoRA adapters, merged into final/")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="mode=lora settings")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(max_steps=100, micro_batch_size=8, eval_every=25))
    # 5e-7 (the DPO paper's, for 7B models) barely moves a 10M-parameter model in a few hundred steps;
    # the small models of the task world need ~1e-5..1e-4 (docs/dpo.md).
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=2e-5, weight_decay=0.0))
    schedule: ScheduleConfig = Field(
        default_factory=default_schedule(kind="cosine", warmup_ratio=0.1), description="LR schedule (default cosine, 10% warmup)"
    )
    eval_batch_size: int = Field(16, ge=1, description="pairs per forward for the reference log-probs and evaluation")
    eval_generation: GenerationEval | None = Field(
        None, description="greedy answers to the held-out prompts scored by the task world's gold reward, base vs DPO"
    )
    dynamics: DynamicsConfig | None = Field(
        None, description="learning-dynamics probes every N steps -> OUT/dynamics.jsonl (docs/dynamics.md)"
    )


class DPOStage(TrainingStage):
    dynamics_title = "DPO learning dynamics"

    def check(self, cfg: Config) -> None:
        if not cfg.data.sources:
            raise ConfigError("data.sources is empty: give at least one file of preference pairs")
        if cfg.eval_generation is not None and not cfg.data.val_sources:
            raise ConfigError("eval_generation answers the prompts of data.val_sources; give held-out pairs there")

    def prepare(self, ctx: Context) -> Plan:
        from chatforge.dpo.data import PairBatches
        from chatforge.dpo.evaluate import generation_eval, pair_eval
        from chatforge.dpo.objective import DPOObjective
        from chatforge.tokenizer.load import load_tokenizer

        cfg = ctx.cfg
        tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
        (train_pairs, eval_pairs), eps = _load_pairs(cfg, tokenizer, ctx.rejects)
        model = load_causal_lm(cfg.model, tokenizer, ctx.device)
        pad_id = tokenizer.pad_token_id
        ref, reference_model, self.cache_used = _reference(ctx, model, train_pairs, eval_pairs, pad_id)
        evaluate = None
        if eval_pairs:
            def evaluate(m):
                return pair_eval(m, eval_pairs, ref["eval"], cfg.loss, pad_id, cfg.eval_batch_size, label_smoothing=eps["eval"])
        self.base_pairs = evaluate(model) if eval_pairs and ctx.is_main else {}
        self.eval_prompts = [p.pair for p in eval_pairs]
        self.base_generation = None
        if cfg.eval_generation is not None and ctx.is_main:
            self.base_generation = generation_eval(model, tokenizer, self.eval_prompts, cfg.eval_generation)
        batches = PairBatches(
            train_pairs, cfg.train.micro_batch_size, pad_id, seed=cfg.train.seed, rank=ctx.info.rank,
            world_size=ctx.info.world_size, reference=ref["train"],
            per_pair={"label_smoothing": eps["train"]} if eps["train"] is not None else None,
            group_by_length=cfg.data.group_by_length,
        )
        self.counts = {"train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs)}
        describe = (
            f"dpo ({cfg.loss.loss}, beta {cfg.loss.beta}, reference {'none' if cfg.loss.reference_free else cfg.reference_mode}, "
            f"{cfg.mode}): {len(train_pairs)} training pairs, {len(eval_pairs)} held out | {ctx.rows_per_step} pairs per step "
            f"x {cfg.train.max_steps} steps (~{cfg.train.max_steps * ctx.rows_per_step / len(train_pairs):.2f} epochs)"
        )
        return Plan(model, DPOObjective(cfg.loss, reference_model), batches, tokenizer, evaluate, describe)

    def finish(self, ctx: Context, plan: Plan, trained: Trained) -> dict:
        from chatforge.dpo.evaluate import format_generation_table, generation_eval

        cfg, result = ctx.cfg, trained.result
        final_generation = None
        if cfg.eval_generation is not None and ctx.is_main:
            final_model = load_causal_lm(ctx.run_dir.final, plan.tokenizer, ctx.device)
            final_generation = generation_eval(final_model, plan.tokenizer, self.eval_prompts, cfg.eval_generation)
            ctx.say(format_generation_table(self.base_generation, final_generation))
        keys = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin", "logps/chosen", "logps/rejected")
        return {
            "loss": cfg.loss.model_dump(),
            "reference_mode": None if cfg.loss.reference_free else cfg.reference_mode,
            "reference_cache_reused": self.cache_used,
            **self.counts,
            "final_train": {k: result.last_metrics.get(k) for k in keys},
            "eval": {"base": self.base_pairs or None, "dpo": result.eval_metrics or None},
            "generation": {"base": self.base_generation, "dpo": final_generation} if final_generation else None,
        }

    def closing(self, ctx: Context, summary: dict) -> str:
        dpo, base = summary["eval"]["dpo"] or {}, self.base_pairs
        held = (
            f" | held-out reward accuracy {dpo['eval/reward_accuracy']:.3f}, margin {dpo['eval/margin']:.3f}, "
            f"log-prob accuracy {base['eval/logp_accuracy']:.3f} -> {dpo['eval/logp_accuracy']:.3f}"
            if dpo else ""
        )
        return f"done: {ctx.run_dir.final} | {summary['train_pairs']} pairs used, {ctx.rejects.total} rejected{held}"


def run(cfg: Config) -> dict:
    return train(cfg, DPOStage())


def _load_pairs(cfg: Config, tokenizer, rejects: RejectLog):
    """(training and held-out encoded pairs, their per-pair label smoothing ε = 1 − p* or None)."""
    from chatforge.dpo.data import encode_pairs, preference_probs, read_pairs

    def load(sources):
        pairs = list(read_pairs(sources, rejects))
        return encode_pairs(tokenizer, pairs, rejects, cfg.data.max_length, cfg.data.truncation, cfg.data.mask_source)

    sets = [load(cfg.data.sources), load(cfg.data.val_sources) if cfg.data.val_sources else []]
    eps = {"train": None, "eval": None}  # per-pair ε = 1 − p* (loss.preference_field)
    if cfg.loss.preference_field is not None:
        for i, split in enumerate(eps):
            sets[i], eps[split] = preference_probs(sets[i], cfg.loss.preference_field, rejects)
    return sets, eps


def _reference(ctx: Context, model, train_pairs, eval_pairs, pad_id: int):
    """(reference log-probs per split, the live reference model or None, whether the cache was reused).

    The reference is the starting model itself unless `reference` names another one."""
    from chatforge.dpo.objective import cached_reference_logps

    cfg, cache = ctx.cfg, ctx.run_dir.root / "reference_logps.pt"
    if cfg.loss.reference_free:
        return {"train": None, "eval": None}, None, None
    separate = cfg.reference is not None and cfg.reference != cfg.model
    ref_model = load_causal_lm(cfg.reference, device=ctx.device) if separate else model
    if cfg.reference_mode == "precomputed":
        sets = {"train": train_pairs, "eval": eval_pairs}
        ref, used = cached_reference_logps(cache, ref_model, sets, pad_id, cfg.eval_batch_size, write=ctx.is_main)
        ctx.say(f"reference log-probs: {'reused from' if used else 'computed and cached in'} {cache}")
        return ref, None, used
    # live: the eval pairs' reference log-probs once; the training ones every step
    ref, _ = cached_reference_logps(cache, ref_model, {"eval": eval_pairs}, pad_id, cfg.eval_batch_size, write=False)
    ref["train"] = None
    return ref, _frozen(ref_model) if separate else _frozen(copy.deepcopy(model)), None


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    """`model` in eval mode (no dropout) without gradients: the live reference."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
