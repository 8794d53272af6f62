"""Reward accuracy on held-out preference pairs: does the model score the chosen answer above the rejected one?

- `model_kind: reward_model`: the model directory is a reward model (a sequence classifier with one
  label, `chatforge rm`); r(y) is its score of prompt + answer.
- `model_kind: dpo`: the model directory is a DPO policy; r(y) is its implicit reward
  β·(log π(y|x) − log π_ref(y|x)) (Rafailov et al. 2023, Eq. 5), from the summed answer log-probs of
  the policy and of `reference` (the model DPO started from). Without a reference the policy's own
  log π(y|x) ranks the pair (`logp_accuracy`, reported in both cases).

A pair counts as correct when r(chosen) > r(rejected); ties count as wrong and are reported. Pairs
that cannot be encoded (too long, malformed) go to the reject log.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

import torch
from pydantic import Field

from chatforge.errors import ConfigError, DataError
from chatforge.evaluation.tasks.base import ModelContext, TaskBase


class RewardAccuracyTask(TaskBase):
    kind: Literal["reward_accuracy"] = "reward_accuracy"
    path: str = Field(description="held-out preference pairs (the layouts of docs/data_formats.md; category kept)")
    split: str | None = Field(None, description="the split of a DatasetDict or a directory to read (e.g. test_prefs)")
    model_kind: Literal["reward_model", "dpo"] = Field("reward_model", description="how the model scores an answer")
    reference: str | None = Field(None, description="dpo: the reference model directory (the policy DPO started from)")
    beta: float = Field(0.1, gt=0, description="dpo: β of the implicit reward (scales margins, not the accuracy)")
    max_pairs: int | None = Field(500, ge=1, description="first N pairs (None: all)")
    max_length: int = Field(512, ge=8, description="tokens per prompt + answer at most; longer pairs are rejected")
    batch_size: int = Field(16, ge=1, description="pairs per forward pass")
    group_field: str = Field("category", description="pair field the accuracy is grouped by")

    def check(self) -> None:
        if self.model_kind == "reward_model" and self.reference is not None:
            raise ConfigError("reference: is for model_kind dpo (a DPO policy's implicit reward); a reward model scores on its own")


def _pairs(cfg: RewardAccuracyTask, rejects):
    from chatforge.dpo.data import PairSourceConfig, read_pairs

    pairs = []
    for pair in read_pairs([PairSourceConfig(path=cfg.path, split=cfg.split)], rejects):
        pairs.append(pair)
        if cfg.max_pairs is not None and len(pairs) >= cfg.max_pairs:
            break
    if not pairs:
        raise DataError(f"reward_accuracy: no usable pairs in {cfg.path} ({rejects.summary_line()})")
    return pairs


def _reward_model_scores(ctx: ModelContext, cfg: RewardAccuracyTask, pairs) -> tuple[list[float], list[float], dict]:
    from chatforge.scoring.config import RewardModelScorerConfig
    from chatforge.scoring.reward_model import RewardModelScorer

    scorer = RewardModelScorer(RewardModelScorerConfig(
        path=ctx.path, tokenizer=ctx.tokenizer_path, batch_size=cfg.batch_size, max_length=cfg.max_length, device=ctx.device,
    ))
    prompts = [p.prompt for p in pairs]
    chosen = scorer.score(prompts, [p.chosen for p in pairs])
    rejected = scorer.score(prompts, [p.rejected for p in pairs])
    return chosen, rejected, {"truncated": scorer.truncated}


def _dpo_scores(ctx: ModelContext, cfg: RewardAccuracyTask, pairs) -> tuple[list[float], list[float], dict, list]:
    from chatforge.dpo.data import encode_pairs
    from chatforge.dpo.objective import reference_logps
    from chatforge.models.build import load_pretrained

    tokenizer = ctx.tokenizer
    encoded = encode_pairs(tokenizer, iter(pairs), ctx.rejects, cfg.max_length)
    if not encoded:
        raise DataError(f"reward_accuracy: every pair of {cfg.path} was rejected ({ctx.rejects.summary_line()})")
    pad = next(t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if t is not None)
    policy_c, policy_r = reference_logps(ctx.model, encoded, pad, cfg.batch_size)
    extra = {"logp_chosen": policy_c.tolist(), "logp_rejected": policy_r.tolist()}
    if cfg.reference is None:
        return policy_c.tolist(), policy_r.tolist(), extra, encoded
    reference = load_pretrained(cfg.reference).to(ctx.device).eval()
    ref_c, ref_r = reference_logps(reference, encoded, pad, cfg.batch_size)
    del reference
    chosen = (cfg.beta * (policy_c - ref_c)).tolist()
    rejected = (cfg.beta * (policy_r - ref_r)).tolist()
    return chosen, rejected, extra, encoded


def run(ctx: ModelContext, cfg: RewardAccuracyTask) -> dict:
    cfg.check()
    pairs = _pairs(cfg, ctx.rejects)
    if cfg.model_kind == "reward_model":
        chosen, rejected, extra = _reward_model_scores(ctx, cfg, pairs)
        logp = None
    else:
        chosen, rejected, extra, encoded = _dpo_scores(ctx, cfg, pairs)
        pairs = [e.pair for e in encoded]
        logp = [c > r for c, r in zip(extra.pop("logp_chosen"), extra.pop("logp_rejected"))]
    rows = defaultdict(list)
    for i, pair in enumerate(pairs):
        rows[str(pair.extra.get(cfg.group_field, "all"))].append(i)
    correct = [c > r for c, r in zip(chosen, rejected)]
    margin = torch.tensor(chosen) - torch.tensor(rejected)
    metrics = {"accuracy": sum(correct) / len(correct), "margin": float(margin.mean())}
    if logp is not None:
        metrics["logp_accuracy"] = sum(logp) / len(logp)
    if len(rows) > 1:
        metrics |= {f"accuracy/{g}": sum(correct[i] for i in idx) / len(idx) for g, idx in sorted(rows.items())}
    details = {
        "pairs": len(pairs), "ties": int((margin == 0).sum()), "model_kind": cfg.model_kind,
        "implicit_reward": cfg.model_kind == "dpo" and cfg.reference is not None,
        "per_group": {g: {"pairs": len(idx), "accuracy": sum(correct[i] for i in idx) / len(idx)} for g, idx in sorted(rows.items())},
        **extra,
    }
    return {"metrics": metrics, "details": details}
