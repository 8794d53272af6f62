"""Held-out evaluation of a DPO policy: preference accuracy on pairs, and gold reward of greedy answers.

`pair_eval`: on held-out pairs, the policy's implicit rewards against the reference,
`reward_accuracy` (share of pairs with r_w > r_l, a tie counting 0), the mean `margin` r_w − r_l and
the loss, and `logp_accuracy`, the share with log π(y_w) > log π(y_l) (the policy's own ranking,
reference-free, meaningful for the starting model too, whose implicit rewards are all 0); each also
per `category` and per `kind` where the records have them.

`generation_eval`: greedy answers (temperature 0, `sampling.Sampler`) to the distinct prompts of the
held-out pairs, scored by the task world's `world.reward.gold_reward`; mean gold reward, correctness
and answer length, per category.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence

import torch
from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.dpo.data import EncodedPair, Pair, collate_pairs
from chatforge.dpo.objective import pair_loss, sequence_logps
from chatforge.errors import ConfigError


class GenerationEval(StrictModel):
    max_prompts: int = Field(100, ge=1, description="distinct held-out prompts answered greedily")
    max_new_tokens: int = Field(96, ge=1, description="answer length limit")
    batch_size: int = Field(32, ge=1, description="prompts decoded together")


@torch.no_grad()
def pair_eval(
    model: torch.nn.Module,
    pairs: Sequence[EncodedPair],
    reference: tuple[torch.Tensor, torch.Tensor] | None,
    loss,
    pad_id: int,
    batch_size: int,
    prefix: str = "eval/",
    label_smoothing: torch.Tensor | None = None,
) -> dict[str, float]:
    """Mean loss, reward accuracy, margin and log-prob accuracy over `pairs` (see the module docstring)."""
    device = next(model.parameters()).device
    rows: list[dict] = []
    order = sorted(range(len(pairs)), key=lambda i: max(len(pairs[i].chosen_ids), len(pairs[i].rejected_ids)))
    for start in range(0, len(order), batch_size):  # pairs of similar length together: less padding
        index = order[start : start + batch_size]
        part = [pairs[i] for i in index]
        batch = {k: v.to(device) for k, v in collate_pairs(part, pad_id).items()}
        logps, counts = sequence_logps(model, batch)
        n = len(part)
        ref_c = ref_r = None
        if reference is not None:
            ref_c, ref_r = reference[0][index].to(device), reference[1][index].to(device)
        eps = label_smoothing[index] if label_smoothing is not None else None
        out = pair_loss(loss, logps[:n], logps[n:], ref_c, ref_r, counts[:n], counts[n:], eps)
        for i, p in enumerate(part):
            rows.append({
                "loss": float(out.losses[i]), "reward_accuracy": float(out.accuracies[i]), "margin": float(out.margins[i]),
                "logp_accuracy": float(logps[i] > logps[n + i]), "category": p.pair.extra.get("category"),
                "kind": p.pair.extra.get("kind"),
            })
    metrics = _means(rows, prefix)
    for group in ("category", "kind"):
        values = sorted({r[group] for r in rows if isinstance(r[group], str)})
        for value in values:
            mine = [r for r in rows if r[group] == value]
            for name in ("reward_accuracy", "logp_accuracy", "margin"):
                metrics[f"{prefix}{group}/{value}/{name}"] = sum(r[name] for r in mine) / len(mine)
    return metrics


def _means(rows: list[dict], prefix: str) -> dict[str, float]:
    if not rows:
        return {}
    return {f"{prefix}{k}": sum(r[k] for r in rows) / len(rows) for k in ("loss", "reward_accuracy", "margin", "logp_accuracy")}


def distinct_prompts(pairs: Sequence[Pair], limit: int) -> list[Pair]:
    """The first pair of each distinct prompt, at most `limit`."""
    seen, out = set(), []
    for pair in pairs:
        key = json.dumps(pair.prompt, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(pair)
        if len(out) == limit:
            break
    return out


def generation_eval(model, tokenizer, pairs: Sequence[Pair], cfg: GenerationEval) -> dict:
    """Mean gold reward (and correctness, words) of greedy answers to the prompts of `pairs`, per category."""
    from chatforge.errors import ChatforgeError
    from chatforge.sampling.config import SamplingConfig
    from chatforge.sampling.sampler import Sampler, chat_prompt
    from chatforge.scoring.world import gold_parts

    prompts = distinct_prompts(pairs, cfg.max_prompts)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=cfg.max_new_tokens, max_batch_size=cfg.batch_size)
    completions = Sampler(model, tokenizer).generate([chat_prompt(tokenizer, p.prompt) for p in prompts], sampling)
    rows, examples = [], []
    for pair, (completion,) in zip(prompts, completions):
        try:
            parts = gold_parts(pair.prompt, completion.text)
        except ChatforgeError as exc:
            raise ConfigError(
                f"eval_generation scores answers with the task world's gold reward, but the prompt of "
                f"{pair.source} {pair.where} is not a world task ({exc}); leave eval_generation unset for other data"
            ) from None
        rows.append({
            "gold_reward": parts.total, "correct": parts.correctness, "words": len(completion.text.split()),
            "category": pair.extra.get("category", "all"),
        })
        if len(examples) < 4:
            examples.append({"prompt": pair.prompt[-1]["content"], "answer": completion.text, "gold_reward": parts.total})
    result = {"prompts": len(rows), **_mean_of(rows), "examples": examples, "per_category": {}}
    groups = defaultdict(list)
    for row in rows:
        groups[row["category"]].append(row)
    for name in sorted(groups):
        result["per_category"][name] = {"prompts": len(groups[name]), **_mean_of(groups[name])}
    return result


def _mean_of(rows: list[dict]) -> dict[str, float]:
    n = max(len(rows), 1)
    return {k: round(sum(r[k] for r in rows) / n, 4) for k in ("gold_reward", "correct", "words")}


def format_generation_table(base: dict | None, dpo: dict) -> str:
    """A text table: gold reward, correctness, words, base vs DPO, overall and per category."""
    lines = [f"{'greedy answers':<24}{'base gold':>10}{'dpo gold':>10}{'base corr':>10}{'dpo corr':>10}{'base words':>11}{'dpo words':>10}"]

    def line(name, b, d):
        def cell(r, k, w):
            return f"{r[k]:>{w}.3f}" if r else f"{'-':>{w}}"
        lines.append(
            f"{name:<24}{cell(b, 'gold_reward', 10)}{cell(d, 'gold_reward', 10)}{cell(b, 'correct', 10)}"
            f"{cell(d, 'correct', 10)}{cell(b, 'words', 11)}{cell(d, 'words', 10)}"
        )

    line(f"all ({dpo['prompts']})", base, dpo)
    for name, row in dpo["per_category"].items():
        line(f"  {name} ({row['prompts']})", (base or {}).get("per_category", {}).get(name), row)
    return "\n".join(lines)
