"""The online-RL objectives: PPO with a critic, and the critic-free GRPO / RLOO.

Each objective has three parts:
- `forward(model, ...)`: per-token log-probs, entropies (and values) of response tokens, used for the
  old policy at rollout time (inference mode) and for the update;
- `advantages(score, kl_tokens, values, mask, beta)`: at rollout time, from the scores and the
  per-token KL to the reference;
- `__call__(model, batch) -> StepOutput`: the loss of one micro-batch of rollout rows, a *sum* with
  its count, so the engine divides by the count of the whole optimizer step (all micro-batches and
  ranks): token-level losses are divided by the global number of response tokens.

A batch without `old_logp` comes from an on-policy rollout (rl/rollout.py): the old log-probs are the
update's own, detached (ratio exactly 1). A batch without `ref_logp` comes from a run without a
reference (β = 0): no KL term and no KL metric.

PPO's per-token loss (InstructGPT-style RLHF, Ouyang et al. 2022, arXiv:2203.02155, Eq. 2, with
Ziegler et al. 2019's per-token KL in the reward):
    r_t = −β KL_t  (+ the normalised score at the last response token)
    A_t, R_t = GAE(r, V_old; γ, λ),  optionally whitened over the rollout batch
    L_t = clipped_surrogate_t + c_v · clipped_value_loss_t − c_H · H_t  (+ β KL_t when the KL is a loss)
PPO-ptx adds γ_ptx · (mean next-token NLL of pretraining windows) to each step.

GRPO / RLOO: one advantage per sample (group-normalised or leave-one-out over a prompt's samples),
the clipped surrogate on every token of the sample, and β·KL_t (k3 by default) as a loss term
(DeepSeekMath, arXiv:2402.03300, Eq. 3). Aggregation (`loss_aggregation`):
    token     Σ over every response token of the step / their count (DAPO's token-level mean)
    sequence  each response's token mean, averaged over responses (the original GRPO)
    constant  Σ over tokens / (responses × max_new_tokens) (Dr. GRPO, arXiv:2503.20783: no length bias)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.engine.loop import StepOutput
from chatforge.errors import ChatforgeError
from chatforge.losses.advantages import gae, group_advantages, leave_one_out_advantages, whiten
from chatforge.losses.lm import IGNORE_INDEX, token_nll_sum
from chatforge.losses.policy import clipped_surrogate, clipped_value_loss, kl_estimate
from chatforge.rl.config import KLConfig
from chatforge.rl.forward import response_outputs
from chatforge.rl.ranks import Ranks


class PPOLossConfig(StrictModel):
    clip: float = Field(0.2, gt=0, description="ε: the ratio is clipped to [1 − ε, 1 + ε]")
    clip_high: float | None = Field(None, gt=0, description="upper ε when it differs (DAPO's clip-higher); null = clip")
    value_clip: float | None = Field(0.2, gt=0, description="δ of the clipped value loss; null = unclipped")
    vf_coef: float = Field(0.5, ge=0, description="c_v: weight of the value loss")
    entropy_coef: float = Field(0.0, ge=0, description="c_H: entropy bonus")
    gamma: float = Field(1.0, ge=0, le=1, description="GAE discount γ")
    lam: float = Field(0.95, ge=0, le=1, description="GAE λ")
    whiten_advantages: bool = Field(True, description="whiten advantages over each rollout batch")


class GRPOLossConfig(StrictModel):
    advantage: Literal["group", "rloo"] = Field("group", description="group: GRPO's normalised; rloo: leave-one-out")
    scale_rewards: bool = Field(True, description="group: divide by the group's std (false = Dr. GRPO)")
    loss_aggregation: Literal["token", "sequence", "constant"] = Field(
        "sequence", description="token: global token mean; sequence: per-response mean (GRPO); constant: Dr. GRPO"
    )
    clip: float = Field(0.2, gt=0, description="ε of the clipped surrogate")
    clip_high: float | None = Field(None, gt=0, description="upper ε (clip-higher); null = clip")
    entropy_coef: float = Field(0.0, ge=0, description="entropy bonus")


def _last_token_rewards(score: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(rows, tokens) zeros with each row's score at its last response position."""
    positions = torch.arange(mask.shape[1]).expand_as(mask)
    last = (positions * mask.long()).argmax(dim=1)
    out = torch.zeros_like(mask, dtype=torch.float32)
    out[torch.arange(mask.shape[0]), last] = score.float()
    return out * mask


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var(R − V) / Var(R) over the response tokens (1: the critic predicts the return exactly)."""
    m = mask.bool()
    r, v = returns[m], values[m]
    var = r.var(unbiased=False)
    return float(1.0 - (r - v).var(unbiased=False) / var) if var > 0 else float("nan")


ROW_METRICS = {
    "score": "reward/proxy", "gold": "reward/gold", "kl": "kl/sequence", "length": "response_length",
    "entropy": "rollout_entropy",
}


def _metric_ratios(batch: dict[str, torch.Tensor], rows: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-row values (row/...) and per-rollout values (rollout/...) of the batch as step means."""
    out = {}
    for key, value in batch.items():
        if key.startswith("row/"):
            name = key.removeprefix("row/")
            out[ROW_METRICS.get(name, name)] = (value.sum(), torch.tensor(float(rows)))
        elif key.startswith("rollout/"):
            out[key] = (value * rows, torch.tensor(float(rows)))
    return out


def _guard(loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
    if not torch.isfinite(loss):
        bad = ", ".join(f"{k} {float(v):.4g}" for k, v in parts.items())
        raise ChatforgeError(
            f"the RL loss is {float(loss)} ({bad}); stopped before the update, the last checkpoint is intact. "
            "Lower optim.lr, raise kl.coef, or clip rewards (reward.clip)"
        )


def ptx_loss(policy: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ next-token NLL, tokens) of the batch's pretraining windows (PPO-ptx)."""
    logits = policy(input_ids=batch["ptx_input_ids"], use_cache=False).logits
    return token_nll_sum(logits, batch["ptx_labels"], IGNORE_INDEX)


class PPOObjective:
    rollout_needs_policy_forward = True  # the critic's values for GAE come from the rollout's forward

    def __init__(self, loss: PPOLossConfig, kl: KLConfig, beta: Callable[[], float], temperature: float = 1.0):
        self.loss, self.kl, self.beta, self.temperature = loss, kl, beta, temperature

    def forward(self, model, input_ids, attention_mask, action_mask, temperature):
        return model(input_ids, attention_mask, action_mask, temperature)

    def rollout_values(self, model, input_ids, attention_mask, action_mask):
        """The old critic's values alone (the old log-probs come from the sampler): the critic's own
        backbone when separate (the actor's forward is skipped), else the actor's decoder without its LM head."""
        backbone = model.critic_backbone
        if backbone is None:
            policy = model.policy
            backbone = (policy.get_base_model() if hasattr(policy, "get_base_model") else policy).get_decoder()
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)[0][:, :-1]
        return model.value_head(hidden) * action_mask

    def reference_forward(self, model, input_ids, attention_mask, action_mask, temperature):
        return response_outputs(model, input_ids, attention_mask, action_mask, temperature, with_entropy=False)

    def advantages(self, score, kl_tokens, values, mask, beta, ranks: Ranks = Ranks()):
        rewards = _last_token_rewards(score, mask)
        if self.kl.in_reward:
            rewards = rewards - beta * kl_tokens
        advantages, returns = gae(rewards, values, mask, self.loss.gamma, self.loss.lam)
        if self.loss.whiten_advantages:  # over the whole rollout batch, every rank's rows
            advantages = whiten(advantages, mask, all_sum=ranks.all_sum)
        return advantages, returns, {"explained_variance": explained_variance(values, returns, mask)}

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        mask = batch["action_mask"]
        logp, entropy, values = model(batch["input_ids"], batch["attention_mask"], mask, self.temperature)
        pg = clipped_surrogate(logp, batch["old_logp"], batch["advantages"], self.loss.clip, self.loss.clip_high)
        vf = clipped_value_loss(values, batch["old_values"], batch["returns"], self.loss.value_clip)
        per_token = pg.losses + self.loss.vf_coef * vf.losses - self.loss.entropy_coef * entropy
        kl_tokens = kl_estimate(logp, batch["ref_logp"], self.kl.estimator) if "ref_logp" in batch else None
        if kl_tokens is not None and not self.kl.in_reward:
            per_token = per_token + self.beta() * kl_tokens
        loss_sum = (per_token * mask).sum()
        tokens = mask.sum()
        parts = {"policy": (pg.losses * mask).sum(), "value": (vf.losses * mask).sum()}
        out = StepOutput(loss_sum, tokens, tokens=int(batch["attention_mask"].sum()))
        if "ptx_input_ids" in batch:
            inner = model.module if hasattr(model, "module") else model
            nll, _ = ptx_loss(inner.policy, batch)
            scaled = batch["ptx_scale"] * nll
            out.loss_sum = out.loss_sum + scaled
            parts["ptx"] = scaled
            out.ratios["loss/ptx"] = (nll.detach(), torch.tensor(float(batch["ptx_labels"].numel())))
        _guard(out.loss_sum, parts)
        rows = mask.shape[0]
        out.sums = {
            "loss/policy": parts["policy"].detach(), "loss/value": parts["value"].detach(),
            "entropy": (entropy.detach() * mask).sum(), "clip_fraction": (pg.clipped * mask).sum(),
            "value_clip_fraction": (vf.clipped * mask).sum(), "approx_kl_old": ((batch["old_logp"] - logp.detach()) * mask).sum(),
        }
        if kl_tokens is not None:
            out.sums["kl/policy_ref_token"] = (kl_tokens.detach() * mask).sum()
        out.ratios.update(_metric_ratios(batch, rows))
        if "sampler_logp" in batch and self.temperature == 1.0:  # old log-probs from the sampler: its check, here
            out.ratios["sampler_logp_gap"] = (((batch["sampler_logp"] - logp.detach()).abs() * mask).sum(), mask.sum())
        return out


class PolicyGradientObjective:
    """GRPO (group-normalised advantages) or RLOO (leave-one-out), clipped, with β·KL to the reference."""

    rollout_needs_policy_forward = False  # advantages from scores alone (and the KL, when in the reward)

    def __init__(self, loss: GRPOLossConfig, kl: KLConfig, beta: Callable[[], float], group_size: int, temperature: float = 1.0):
        if loss.advantage == "rloo" and group_size < 2:
            raise ChatforgeError("advantage=rloo needs rollout.samples_per_prompt >= 2")
        self.loss, self.kl, self.beta, self.group_size, self.temperature = loss, kl, beta, group_size, temperature

    def forward(self, model, input_ids, attention_mask, action_mask, temperature):
        logp, entropy, _ = response_outputs(model, input_ids, attention_mask, action_mask, temperature)
        return logp, entropy, None

    def reference_forward(self, model, input_ids, attention_mask, action_mask, temperature):
        return response_outputs(model, input_ids, attention_mask, action_mask, temperature, with_entropy=False)

    def advantages(self, score, kl_tokens, values, mask, beta, ranks: Ranks = Ranks()):
        """Per-sample advantages: a group never spans ranks, so nothing here is reduced over them."""
        if self.kl.in_reward:  # RLOO paper's sequence reward r − β·KL(y)
            score = score - beta * kl_tokens.sum(dim=1)
        if self.loss.advantage == "rloo":
            per_sample = leave_one_out_advantages(score, self.group_size)
        else:
            per_sample = group_advantages(score, self.group_size, scale=self.loss.scale_rewards)
        advantages = per_sample[:, None] * mask
        zero_groups = float((per_sample.reshape(-1, self.group_size).abs().sum(1) == 0).float().mean())
        return advantages, torch.zeros_like(advantages), {"groups_without_signal": zero_groups}

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        mask = batch["action_mask"]
        bonus = self.loss.entropy_coef > 0  # else the entropy is a metric: no gradient through it
        logp, entropy, _ = response_outputs(
            model, batch["input_ids"], batch["attention_mask"], mask, self.temperature, entropy_grad=bonus
        )
        old_logp = batch["old_logp"] if "old_logp" in batch else logp.detach()  # on-policy: ratio exactly 1
        pg = clipped_surrogate(logp, old_logp, batch["advantages"], self.loss.clip, self.loss.clip_high)
        kl_tokens = kl_estimate(logp, batch["ref_logp"], self.kl.estimator) if "ref_logp" in batch else None
        per_token = pg.losses - self.loss.entropy_coef * entropy if bonus else pg.losses
        if kl_tokens is not None and not self.kl.in_reward:
            per_token = per_token + self.beta() * kl_tokens
        rows = mask.shape[0]
        lengths = mask.sum(dim=1)
        if self.loss.loss_aggregation == "token":
            loss_sum, count = (per_token * mask).sum(), mask.sum()
        elif self.loss.loss_aggregation == "sequence":
            loss_sum, count = ((per_token * mask).sum(dim=1) / lengths.clamp(min=1)).sum(), rows
        else:
            loss_sum, count = (per_token * mask).sum() / batch["max_new_tokens"], rows
        _guard(loss_sum, {"policy": (pg.losses * mask).sum()})
        out = StepOutput(loss_sum, count, tokens=int(batch["attention_mask"].sum()))
        tokens = mask.sum()
        out.ratios = {
            "loss/policy": ((pg.losses.detach() * mask).sum(), tokens),
            "entropy": ((entropy.detach() * mask).sum(), tokens),
            "clip_fraction": ((pg.clipped * mask).sum(), tokens),
            "approx_kl_old": (((old_logp - logp.detach()) * mask).sum(), tokens),
            **_metric_ratios(batch, rows),
        }
        if kl_tokens is not None:
            out.ratios["kl/policy_ref_token"] = ((kl_tokens.detach() * mask).sum(), tokens)
        if "sampler_logp" in batch and self.temperature == 1.0:  # on-policy or old log-probs from the sampler: its check
            out.ratios["sampler_logp_gap"] = (((batch["sampler_logp"] - logp.detach()).abs() * mask).sum(), tokens)
        return out
