"""Online DPO of a chat model: every round samples pairs from the current policy, a scorer labels them
(best vs worst of a prompt's samples), and DPO steps follow on them (`chatforge.rl.online_dpo`,
docs/rl.md). The loss is the offline stage's (`chatforge.dpo`, `loss.*`); `dynamics` runs the
learning-dynamics probes on it (docs/dynamics.md).

    chatforge online-dpo model=runs/sft/world/final prompts.train=world/preferences/pairs_train.jsonl \\
        prompts.test=world/verifiable/test.jsonl
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.dpo.config import DPOLossConfig
from chatforge.dynamics.config import DynamicsConfig
from chatforge.engine.config import OptimConfig, TrainConfig
from chatforge.engine.schedules import ScheduleConfig
from chatforge.rl.config import (
    DiagnosticsConfig,
    PolicyEvalConfig,
    PromptsConfig,
    RewardConfig,
    RolloutConfig,
    rollout_sampling,
)
from chatforge.sft.modes import LoraSettings
from chatforge.stages._rollout import RolloutStage
from chatforge.stages._training import (
    Context,
    Plan,
    default_schedule,
    load_causal_lm,
    train,
)


class Config(StrictModel):
    out: str = Field("runs/online_dpo", description="run directory")
    model: str = Field(description="the starting policy: a chat model directory, usually an SFT run's final/ (required)")
    tokenizer: str | None = Field(None, description="tokenizer directory; default: the model directory")
    reference: str | None = Field(None, description="reference model directory; default: the starting model (LoRA: its base)")
    prompts: PromptsConfig
    rollout: RolloutConfig = Field(
        default_factory=lambda: RolloutConfig(prompts_per_rollout=16, samples_per_prompt=4, sampling=rollout_sampling())
    )
    reward: RewardConfig = Field(default_factory=RewardConfig)
    min_margin: float = Field(0.1, gt=0, description="a pair needs best − worst score >= this")
    loss: DPOLossConfig = Field(default_factory=DPOLossConfig)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)
    eval: PolicyEvalConfig = Field(default_factory=PolicyEvalConfig)
    dynamics: DynamicsConfig | None = Field(None, description="learning-dynamics probes every N steps -> OUT/dynamics.jsonl")
    mode: Literal["full", "lora"] = Field("full", description="full, or LoRA adapters (reference = the base, adapters off)")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="mode=lora settings")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(max_steps=64, micro_batch_size=8, eval_every=32, save_every=16))
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=2e-5, weight_decay=0.0))
    schedule: ScheduleConfig = Field(default_factory=default_schedule(kind="constant", warmup_steps=0), description="LR schedule")


class OnlineDPOStage(RolloutStage):
    title = "online DPO"

    dynamics_title = "online DPO learning dynamics"

    def prepare(self, ctx: Context) -> Plan:
        from chatforge.rl import setup
        from chatforge.rl.online_dpo import OnlineDPOObjective, OnlinePairBatches
        from chatforge.tokenizer.load import load_tokenizer

        cfg = ctx.cfg
        tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
        train_prompts, test_prompts = setup.load_rl_prompts(ctx)
        model = load_causal_lm(cfg.model, tokenizer, ctx.device)
        reference = setup.frozen_reference(cfg, model, ctx.device)
        self.batches = OnlinePairBatches(
            train_prompts, tokenizer, cfg, cfg.train.micro_batch_size, ctx.rows_per_step, ctx.run_dir.root,
            seed=cfg.train.seed, reference=reference, say=ctx.say, write=ctx.is_main,
        )
        self.evaluate = setup.evaluator(ctx, test_prompts, tokenizer, self.batches)
        return Plan(
            model, OnlineDPOObjective(cfg.loss), self.batches, tokenizer, evaluate=self.evaluate,
            describe=(f"online dpo ({cfg.loss.loss}, beta {cfg.loss.beta}, {cfg.mode}): {len(train_prompts)} training prompts, "
                      f"{len(test_prompts)} held out | per round {cfg.rollout.prompts_per_rollout} prompts x "
                      f"{cfg.rollout.samples_per_prompt} samples, {ctx.rows_per_step} pairs per step | {{trainable:,}} trainable"),
            summary={"train_prompts": len(train_prompts), "test_prompts": len(test_prompts)},
        )


def run(cfg: Config) -> dict:
    return train(cfg, OnlineDPOStage())
