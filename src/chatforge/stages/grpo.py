"""Critic-free policy optimisation of a chat model: GRPO (group-normalised advantages, with Dr. GRPO's
options) or RLOO (leave-one-out baseline), both with the clipped surrogate and a KL to the reference
(docs/rl.md).

`rollout.samples_per_prompt` samples of each prompt form its group; `loss.advantage` picks GRPO's
(r − mean)/std (`scale_rewards: false` drops the std: Dr. GRPO) or RLOO's r − mean of the others;
`loss.loss_aggregation` averages per token, per sequence (GRPO) or by a constant (Dr. GRPO). The KL
to the reference is a loss term by default (k3, β = kl.coef), or in the reward (`kl.in_reward`).

    chatforge grpo model=runs/sft/world/final data.sources=world/verifiable/train.jsonl rollout.samples_per_prompt=4
    chatforge grpo ... loss.advantage=rloo
"""

from __future__ import annotations

from pydantic import Field

from chatforge.rl.config import KLConfig, RLCommon, RolloutConfig, rollout_sampling
from chatforge.rl.objectives import GRPOLossConfig
from chatforge.stages._rollout import RolloutStage
from chatforge.stages._training import Context, Plan, load_causal_lm, train


class Config(RLCommon):
    out: str = Field("runs/grpo", description="run directory")
    rollout: RolloutConfig = Field(
        default_factory=lambda: RolloutConfig(prompts_per_rollout=8, samples_per_prompt=4, sampling=rollout_sampling())
    )
    kl: KLConfig = Field(default_factory=lambda: KLConfig(coef=0.04, estimator="k3", in_reward=False))
    loss: GRPOLossConfig = Field(default_factory=GRPOLossConfig)


class GRPOStage(RolloutStage):
    def prepare(self, ctx: Context) -> Plan:
        from chatforge.rl import setup
        from chatforge.rl.objectives import PolicyGradientObjective
        from chatforge.tokenizer.load import load_tokenizer

        cfg = ctx.cfg
        tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
        train_prompts, test_prompts = setup.load_rl_prompts(ctx)
        model = load_causal_lm(cfg.model, tokenizer, ctx.device)
        reference = setup.frozen_reference(cfg, model, ctx.device)
        holder: dict = {}
        objective = PolicyGradientObjective(
            cfg.loss, cfg.kl, lambda: holder["batches"].kl.value, cfg.rollout.samples_per_prompt, cfg.rollout.sampling.temperature or 1.0
        )
        self.batches = holder["batches"] = setup.rollout_batches(ctx, train_prompts, tokenizer, objective, reference)
        self.evaluate = setup.evaluator(ctx, test_prompts, tokenizer, self.batches)
        name = "rloo" if cfg.loss.advantage == "rloo" else ("dr-grpo" if not cfg.loss.scale_rewards else "grpo")
        return Plan(
            model, objective, self.batches, tokenizer, evaluate=self.evaluate,
            describe=setup.describe(ctx, f"{name} ({cfg.loss.loss_aggregation} averaging, {cfg.mode})", train_prompts, test_prompts),
            summary={"train_prompts": len(train_prompts), "test_prompts": len(test_prompts), "method": name},
        )

    def title_of(self, plan: Plan) -> str:
        return plan.summary["method"]


def run(cfg: Config) -> dict:
    return train(cfg, GRPOStage())
