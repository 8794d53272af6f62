"""Typed configs shared by the online-RL stages (ppo, grpo, online_dpo)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator

from chatforge.config.base import StrictModel
from chatforge.data.corpus import SourceConfig
from chatforge.data.prompts import PromptSources
from chatforge.engine.config import OptimConfig, TrainConfig
from chatforge.engine.schedules import ScheduleConfig, default_schedule
from chatforge.losses.policy import KLEstimator
from chatforge.rl.kl import AdaptiveKLConfig
from chatforge.sampling.config import SamplingConfig
from chatforge.scoring.config import GoldScorerConfig, ScorerConfig
from chatforge.sft.modes import LoraSettings


def rollout_sampling(**kw) -> SamplingConfig:
    return SamplingConfig(**({"temperature": 1.0, "max_new_tokens": 64, "seed": 0} | kw))


class RLDataConfig(StrictModel):
    """The prompts: `sources` trained on, `val_sources` held out (the keys of sft, rm and dpo)."""

    # the keys of the old `prompts:` section; a config that still uses them is told the new ones
    renamed_keys: ClassVar[dict[str, str]] = {
        "train": "sources", "test": "val_sources", "max_train": "max_prompts", "max_test": "max_val_prompts",
    }

    sources: PromptSources = Field(
        min_length=1, description="training prompts: [{path, split}] or one path; world records: `prompt` messages, or `messages` (required)"
    )
    val_sources: PromptSources = Field(
        default_factory=list, description="held-out prompts: gold reward before, during and after training ([]: none)"
    )
    max_prompts: int | None = Field(None, ge=1, description="use the first N training prompts")
    max_val_prompts: int | None = Field(100, ge=1, description="held-out prompts evaluated")
    tasks: list[str] | None = Field(None, min_length=1, description="keep only prompts of these tasks (training and held out)")


class RolloutConfig(StrictModel):
    # the key of the two-valued switch this option replaced (always = recompute)
    renamed_keys: ClassVar[dict[str, str]] = {"old_logp_forward": "old_logprobs"}

    prompts_per_rollout: int = Field(16, ge=1, description="prompts sampled per rollout batch")
    samples_per_prompt: int = Field(1, ge=1, description="samples per prompt (the group size of GRPO/RLOO)")
    sampling: SamplingConfig = Field(default_factory=rollout_sampling, description="sampler settings (n is samples_per_prompt)")
    epochs: int = Field(1, ge=1, description="passes (PPO epochs) over each rollout batch")
    forward_batch_size: int = Field(16, ge=1, description="rows per forward when computing old/reference log-probs")
    old_logprobs: Literal["auto", "sampler", "recompute"] = Field(
        "auto",
        description="where the old policy's per-token log-probs come from. recompute: a forward of the policy over "
        "the rollout; sampler: the log-probs the sampler recorded while decoding (the same numbers up to float error "
        "when sampling.temperature is 1 and the backend is torch); auto: none needed on-policy (critic-free, epochs 1, "
        "one optimizer step, no KL at rollout time: the training forward's, detached), else the sampler's where they "
        "are exact (also float32 weights), else recompute",
    )

    @model_validator(mode="after")
    def _sampler_logprobs(self):
        reason = sampler_logprobs_inexact(self.sampling)
        if self.old_logprobs == "sampler" and reason is not None:
            raise ValueError(f"rollout.old_logprobs=sampler: {reason}; use old_logprobs=auto or recompute")
        return self


def sampler_logprobs_inexact(sampling: SamplingConfig) -> str | None:
    """Why the sampler's recorded log-probs are not the old policy's log-probs the objective needs, or None.

    The sampler records log p(token) under the model's raw distribution (temperature 1, before
    penalties, logit bias, top-k/top-p/min-p and JSON masks: sampling/sampler.py), and the objective's
    log-probs are also taken before any filter, at the sampling temperature (rl/forward.py). So they are
    the same quantity exactly when the temperature is 1; filters change which tokens are drawn, not the
    log-prob of a drawn token. vLLM computes its log-probs with its own kernels and weights copy."""
    if (sampling.temperature or 1.0) != 1.0:
        return f"sampling.temperature={sampling.temperature:g} (the sampler records log-probs at temperature 1, the objective's are at T)"
    if sampling.backend != "torch":
        return f"sampling.backend={sampling.backend} (its log-probs come from another copy of the weights and other kernels)"
    return None


class KLConfig(StrictModel):
    coef: float = Field(0.05, ge=0, description="β: weight of the KL to the reference (initial value when adaptive)")
    estimator: KLEstimator = Field("k1", description="per-token estimator: k1 (log-ratio), k2 (½ log-ratio²), k3 ((r−1) − log r)")
    in_reward: bool = Field(True, description="true: −β·KL_t is part of each token's reward; false: β·KL is a loss term")
    adaptive: AdaptiveKLConfig | None = Field(None, description="adapt β toward a target KL (Ziegler et al. 2019); null = fixed")


class RewardConfig(StrictModel):
    scorer: ScorerConfig = Field(default_factory=GoldScorerConfig, description="the proxy reward that trains the policy")
    gold: ScorerConfig | None = Field(
        default_factory=GoldScorerConfig, description="the judge, logged beside the proxy (over-optimisation); null = none"
    )
    normalize: Literal["none", "running", "batch"] = Field(
        "none", description="whiten scores: running (mean/var over every score so far), batch (this rollout's)"
    )
    clip: float | None = Field(None, gt=0, description="clip the (normalised) score to ±clip")


class PtxConfig(StrictModel):
    sources: list[SourceConfig] = Field(description="pretraining text (the token caches of chatforge pretrain)")
    coef: float = Field(1.0, ge=0, description="γ: weight of the pretraining next-token loss against the RL loss")
    rows_per_step: int = Field(4, ge=1, description="pretraining windows per optimizer step (split evenly over its micro-batches)")
    seq_len: int = Field(128, ge=8, description="tokens per pretraining window")
    cache_dir: str = Field("runs/.cache/tokens", description="token caches, shared with chatforge pretrain")


class DiagnosticsConfig(StrictModel):
    samples_every: int = Field(5, ge=0, description="write a table of sample rollouts every N rollout batches (0 = never)")
    samples_shown: int = Field(4, ge=1, description="rollouts per table")
    window: int = Field(3, ge=2, description="rollout batches compared by the early warnings (recent vs the ones before)")
    length_drift: float = Field(0.5, gt=0, description="warn when the mean response length moves by this fraction")
    entropy_floor: float = Field(0.3, ge=0, description="warn when the mean entropy falls below this fraction of its start")
    stop_on_nan: bool = Field(True, description="stop with a diagnosis when a loss or reward is NaN/Inf")


class PolicyEvalConfig(StrictModel):
    samples: int = Field(4, ge=1, description="samples per held-out prompt (the gold reward's mean and standard error)")
    sampling: SamplingConfig = Field(default_factory=lambda: rollout_sampling(seed=12345), description="sampler settings")
    greedy: bool = Field(True, description="also score one greedy answer per prompt")


def uses_reference(kl: KLConfig | None) -> bool:
    """Whether a run needs the reference policy: a KL term whose weight is, or may become (adaptive), non-zero.
    `kl=None` (a stage without a KL section, online DPO) keeps it: its loss uses the reference itself."""
    return kl is None or kl.coef > 0 or kl.adaptive is not None


def skips_old_forward(rollout: RolloutConfig, kl: KLConfig, rows_per_step: int, critic_free: bool) -> bool:
    """Whether the rollout's old-policy forward can be skipped because it would give exactly the
    training forward's log-probs, detached: each rollout row is trained on once (one epoch), all in one
    optimizer step (so no update lands between sampling and the loss), and nothing at rollout time needs
    the policy's log-probs or values (no critic for GAE, no KL in the reward, no adaptive β to update)."""
    rows = rollout.prompts_per_rollout * rollout.samples_per_prompt
    kl_at_rollout = kl.adaptive is not None or (kl.in_reward and kl.coef > 0)
    return (
        rollout.old_logprobs == "auto" and critic_free and rollout.epochs == 1 and rows == rows_per_step and not kl_at_rollout
    )


def old_logprobs_source(rollout: RolloutConfig, kl: KLConfig, rows_per_step: int, critic_free: bool,
                        weights_dtype: torch.dtype = torch.float32) -> Literal["training", "sampler", "recompute"]:
    """Where a rollout's old log-probs come from: `training` (on-policy: the update's own forward,
    detached; no old forward), `sampler` (the sampler's recorded log-probs; no old forward, PPO still
    runs its critic), `recompute` (the old policy's forward). `auto` takes the sampler's only where they
    equal a float32 forward's up to float error (`sampler_logprobs_inexact`, float32 weights)."""
    if rollout.old_logprobs == "recompute":
        return "recompute"
    if rollout.old_logprobs == "sampler":
        return "sampler"
    if skips_old_forward(rollout, kl, rows_per_step, critic_free):
        return "training"
    exact = sampler_logprobs_inexact(rollout.sampling) is None and weights_dtype == torch.float32
    return "sampler" if exact else "recompute"


def check_rows(rows: int, micro: int, accum: int, world: int, where: str) -> None:
    per_step = micro * accum * world
    if rows % per_step:
        raise ValueError(
            f"{where}: a rollout batch of {rows} rows does not split into optimizer steps of "
            f"train.micro_batch_size x train.grad_accum_steps x processes = {per_step} rows"
        )


class RLCommon(StrictModel):
    """Keys every online-RL stage (ppo, grpo, online_dpo) shares: the policy and its reference, the
    prompts and their rollouts, the held-out evaluation, the training mode and the run's training
    settings. A stage adds its loss (and ppo/grpo their `kl`) and overrides a default where its own
    differs (`out`; grpo's and online_dpo's `rollout`, online_dpo's `optim`)."""

    renamed_keys: ClassVar[dict[str, str]] = {"prompts": "data"}  # prompts.train/test: data.sources/val_sources

    out: str = Field(description="run directory")
    model: str = Field(description="the starting policy: a chat model directory, usually an SFT run's final/ (required)")
    tokenizer: str | None = Field(None, description="tokenizer directory; default: the model directory")
    reference: str | None = Field(None, description="reference model directory; default: the starting model (LoRA: its base)")
    data: RLDataConfig
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)
    eval: PolicyEvalConfig = Field(default_factory=PolicyEvalConfig)
    mode: Literal["full", "lora"] = Field("full", description="full, or LoRA adapters (reference = the base, adapters off)")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="mode=lora settings")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(max_steps=64, micro_batch_size=8, eval_every=32, save_every=16))
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-5, weight_decay=0.0))
    schedule: ScheduleConfig = Field(default_factory=default_schedule(kind="constant", warmup_steps=0), description="LR schedule")

    @model_validator(mode="after")
    def _sampling_n(self):
        if self.rollout.sampling.n != 1:
            raise ValueError("rollout.sampling.n: set rollout.samples_per_prompt instead")
        return self
