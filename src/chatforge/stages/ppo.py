"""PPO with a critic for a chat model: rollouts from the sampler, scorers as reward, per-token KL to a
frozen reference, GAE, the clipped surrogate and value loss, optional PPO-ptx (docs/rl.md).

The engine trains one module, `models.heads.ActorCritic`: the policy, and a value head on the
policy's own hidden states (`critic: shared`) or on its own copy of the decoder (`separate`); the
critic's parameter group runs at `critic_lr_scale` × the LR. The rollout Batches (`rl.rollout`)
sample a batch, score it, take old/reference log-probs and values, compute rewards (the score on
the last token, −β·KL on every token) and GAE advantages, and serve `rollout.epochs` passes of
minibatches. With `mode: lora` the policy trains adapters and the reference is the frozen base
(adapters off); the value head trains in full.

    chatforge ppo model=runs/sft/world/final data.sources=world/verifiable/train.jsonl data.val_sources=world/verifiable/test.jsonl
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from chatforge.rl.config import KLConfig, PtxConfig, RLCommon
from chatforge.rl.objectives import PPOLossConfig
from chatforge.stages._rollout import RolloutStage
from chatforge.stages._training import Context, Plan, load_causal_lm, train


class Config(RLCommon):
    out: str = Field("runs/ppo", description="run directory")
    kl: KLConfig = Field(default_factory=KLConfig)
    critic: Literal["shared", "separate"] = Field("shared", description="value head on the actor's backbone or on its own copy")
    critic_lr_scale: float = Field(1.0, gt=0, description="the critic's LR as a multiple of optim.lr")
    loss: PPOLossConfig = Field(default_factory=PPOLossConfig)
    ptx: PtxConfig | None = Field(None, description="PPO-ptx: pretraining next-token loss mixed into every step; null = off")


class PPOStage(RolloutStage):
    title = "PPO"

    def prepare(self, ctx: Context) -> Plan:
        from chatforge.models.heads import ActorCritic, critic_param_groups
        from chatforge.rl import setup
        from chatforge.rl.objectives import PPOObjective
        from chatforge.sft.modes import apply_mode
        from chatforge.tokenizer.load import load_tokenizer

        cfg = ctx.cfg
        tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
        train_prompts, test_prompts = setup.load_rl_prompts(ctx)
        policy = load_causal_lm(cfg.model, tokenizer, ctx.device)
        reference = setup.frozen_reference(cfg, policy, ctx.device)
        policy = apply_mode(policy, cfg.mode, cfg.lora)
        model = ActorCritic(policy, cfg.critic).to(ctx.device)
        holder: dict = {}
        objective = PPOObjective(cfg.loss, cfg.kl, lambda: holder["batches"].kl.value, cfg.rollout.sampling.temperature or 1.0)
        ptx = setup.ptx_stream(ctx, tokenizer) if cfg.ptx is not None else None
        self.batches = holder["batches"] = setup.rollout_batches(ctx, train_prompts, tokenizer, objective, reference, ptx)
        self.evaluate = setup.evaluator(ctx, test_prompts, tokenizer, self.batches)
        return Plan(
            model, objective, self.batches, tokenizer, evaluate=self.evaluate, mode=None,
            param_groups=critic_param_groups(cfg.critic_lr_scale),
            describe=setup.describe(ctx, f"ppo (critic {cfg.critic}, {cfg.mode}{', ptx' if cfg.ptx else ''})", train_prompts, test_prompts),
            summary={"train_prompts": len(train_prompts), "test_prompts": len(test_prompts)},
        )


def run(cfg: Config) -> dict:
    return train(cfg, PPOStage())
