"""Online DPO of a chat model: every round samples pairs from the current policy, a scorer labels them
(best vs worst of a prompt's samples), and DPO steps follow on them (`chatforge.rl.online_dpo`,
docs/rl.md). The loss is the offline stage's (`chatforge.dpo`, `loss.*`); `dynamics` runs the
learning-dynamics probes on it (docs/dynamics.md).

    chatforge online-dpo model=runs/sft/world/final data.sources=world/preferences/pairs_train.jsonl \\
        data.val_sources=world/verifiable/test.jsonl
"""

from __future__ import annotations

from pydantic import Field

from chatforge.dpo.config import DPOLossConfig
from chatforge.dynamics.config import DynamicsConfig
from chatforge.engine.config import OptimConfig
from chatforge.rl.config import RLCommon, RolloutConfig, rollout_sampling
from chatforge.stages._rollout import RolloutStage
from chatforge.stages._training import Context, Plan, load_causal_lm, train


class Config(RLCommon):
    out: str = Field("runs/online_dpo", description="run directory")
    rollout: RolloutConfig = Field(
        default_factory=lambda: RolloutConfig(prompts_per_rollout=16, samples_per_prompt=4, sampling=rollout_sampling())
    )
    min_margin: float = Field(0.1, gt=0, description="a pair needs best − worst score >= this")
    loss: DPOLossConfig = Field(default_factory=DPOLossConfig)
    dynamics: DynamicsConfig | None = Field(None, description="learning-dynamics probes every N steps -> OUT/dynamics.jsonl")
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=2e-5, weight_decay=0.0))


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
            seed=cfg.train.seed, reference=reference, say=ctx.say, write=ctx.is_main, ranks=setup.ranks(ctx),
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
