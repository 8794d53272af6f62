"""Which sampled responses a self-training round keeps (pure functions over scored samples).

- ReST-EM (Singh et al. 2023, arXiv 2312.06585), E-step: every sample whose binary reward is 1,
  at most `cap` per prompt (chosen at random, seeded) so that easy prompts, solved by nearly every
  sample, do not dominate the fine-tuning set; duplicates of one prompt's response are kept once
  (the paper keeps up to 10 distinct correct solutions per MATH problem).
- Rejection sampling (Llama 2, Touvron et al. 2023, §3.2.3): per prompt the single highest-scored
  sample; over rounds, the pool keeps for each prompt the best sample of every round so far, so a
  later, worse policy cannot replace an earlier, better answer ("the best samples from all previous
  iterations").
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Scored:
    prompt_id: str
    response: str
    reward: float
    round: int = 0


def keep_correct(samples: Sequence[Scored], cap: int | None, seed: int, threshold: float = 1.0) -> list[Scored]:
    """ReST-EM's E-step filter: distinct responses with reward >= threshold, at most `cap` per prompt."""
    by_prompt: dict[str, list[Scored]] = {}
    for s in samples:
        if s.reward >= threshold:
            chosen = by_prompt.setdefault(s.prompt_id, [])
            if all(c.response != s.response for c in chosen):
                chosen.append(s)
    kept = []
    for prompt_id, chosen in by_prompt.items():
        if cap is not None and len(chosen) > cap:
            rng = random.Random(f"{seed}:{prompt_id}")
            chosen = [chosen[i] for i in sorted(rng.sample(range(len(chosen)), cap))]
        kept += chosen
    return kept


def best_per_prompt(samples: Sequence[Scored], min_reward: float | None = None) -> dict[str, Scored]:
    """The highest-reward sample of each prompt (the first one on ties), if above `min_reward`."""
    best: dict[str, Scored] = {}
    for s in samples:
        if min_reward is not None and s.reward < min_reward:
            continue
        if s.prompt_id not in best or s.reward > best[s.prompt_id].reward:
            best[s.prompt_id] = s
    return best


def merge_best(pool: dict[str, Scored], new: dict[str, Scored]) -> dict[str, Scored]:
    """Rejection sampling's pool over rounds: per prompt the better of the pool's and the new best
    (the earlier one on ties, so the pool only changes for a strictly better sample)."""
    merged = dict(pool)
    for prompt_id, s in new.items():
        if prompt_id not in merged or s.reward > merged[prompt_id].reward:
            merged[prompt_id] = s
    return merged
