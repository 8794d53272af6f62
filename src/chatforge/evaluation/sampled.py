"""Sampled-generation metrics on verifiable prompts: pass@k (unbiased), majority vote, greedy accuracy.

pass@k is the probability that at least one of k samples is correct, estimated without bias from
n >= k samples of which c are correct (Chen et al. 2021, "Evaluating Large Language Models Trained
on Code"): pass@k = 1 - C(n-c, k) / C(n, k), computed as a product so it never overflows, averaged
over prompts. pass@1 is then the mean share of correct samples.

Majority vote (maj@n, "self-consistency"): the samples' answer keys (`key(record, response)`; by
default `scoring.world.final_answer_key`: the text after the last "The answer is", numbers as
integers) are counted and the first sample holding the most frequent one is checked; a sample
without a final answer does not vote, a prompt where none does counts as wrong.
Ties go to the answer reached first among the samples, so the result is deterministic.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one prompt with `c` correct out of `n` samples."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def majority_answer(keys: Sequence[str | None]) -> str | None:
    """The most frequent non-None key; ties go to the one that appears first."""
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(k for k in keys if k is not None and counts[k] == best)


def sampled_metrics(
    records: Sequence[dict],
    samples: Sequence[Sequence[str]],
    check: Callable[[dict, str], bool],
    ks: Sequence[int],
    greedy: Sequence[str] | None = None,
    group_field: str = "task",
    key: Callable[[dict, str], str | None] | None = None,
) -> dict:
    """pass@k for each k <= n, maj@n and (given greedy answers) greedy accuracy, overall and per group.

    `samples[i]` are the n sampled responses to `records[i]`; `check(record, response)` says whether
    one is correct; the first sample with the majority key is checked for maj@n."""
    if key is None:
        from chatforge.scoring.world import final_answer_key as key
    groups: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        groups[str(record.get(group_field, "all"))].append(i)
    per_prompt = []
    for i, (record, responses) in enumerate(zip(records, samples)):
        n = len(responses)
        correct = sum(bool(check(record, r)) for r in responses)
        keys = [key(record, r) for r in responses]
        vote = majority_answer(keys)
        row = {
            "n": n, "correct": correct,
            **{f"pass@{k}": pass_at_k(n, correct, k) for k in ks if k <= n},
            f"maj@{n}": float(vote is not None and bool(check(record, responses[keys.index(vote)]))),
        }
        if greedy is not None:
            row["greedy"] = float(bool(check(record, greedy[i])))
        per_prompt.append(row)

    def mean(rows: list[dict]) -> dict:
        keys = [k for k in rows[0] if k not in ("n", "correct")] if rows else []
        return {k: sum(r[k] for r in rows) / len(rows) for k in keys} | {"prompts": len(rows)}

    return {
        "all": mean(per_prompt),
        "by_group": {g: mean([per_prompt[i] for i in idx]) for g, idx in sorted(groups.items())},
        "per_prompt": per_prompt,
    }
