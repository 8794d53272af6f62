"""Score the drops against ground truth carried by the documents (the task world's web pages).

Each document's `labels[truth_field]` is `{"keep": bool, "reason": str}`. Every readable document
ends either kept (in the output) or dropped by one step; from that:
  - per true reason: how many documents, how many were dropped (recall for a bad reason, the
    false-drop rate for a good one) and by which steps;
  - per step: how many it dropped and the share that truly should go (precision);
  - overall precision and recall of "dropped" against "should not be kept";
  - per step and true reason, how many documents reached the step and how many it dropped (the
    near-dedup step's catch rate among the near-duplicates it saw, its false-positive rate among
    the good pages it saw).
Documents without the truth field (unreadable records) are left out and counted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def score_drops(kept: list[dict], dropped: list[dict], truth_field: str, order: tuple[str, ...] = ()) -> dict[str, Any]:
    """`order`: the steps in pipeline order (for the reached/dropped table)."""
    outcomes: list[tuple[dict, str | None]] = [(r, None) for r in kept] + [(r, r.get("dropped_at")) for r in dropped]
    by_reason: dict[str, Counter] = defaultdict(Counter)
    per_step: dict[str, Counter] = defaultdict(Counter)
    reach: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    without_truth = 0
    tp = fp = fn = tn = 0
    for record, step in outcomes:
        truth = record.get("labels", {}).get(truth_field)
        if not isinstance(truth, dict) or "keep" not in truth:
            without_truth += 1
            continue
        reason = str(truth.get("reason", "keep" if truth["keep"] else "drop"))
        by_reason[reason]["total"] += 1
        last = order.index(step) if step in order else len(order)
        for reached in order[: last + 1]:
            reach[reached][reason]["reached"] += 1
        if step in order:
            reach[step][reason]["dropped"] += 1
        if step is None:
            by_reason[reason]["kept"] += 1
            fn += not truth["keep"]
            tn += bool(truth["keep"])
            continue
        by_reason[reason][f"dropped_by:{step}"] += 1
        by_reason[reason]["dropped"] += 1
        per_step[step]["dropped"] += 1
        per_step[step]["should_drop"] += not truth["keep"]
        tp += not truth["keep"]
        fp += bool(truth["keep"])
    reasons = {}
    for reason, c in sorted(by_reason.items()):
        steps = {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("dropped_by:")}
        reasons[reason] = {"total": c["total"], "dropped": c["dropped"], "dropped_share": _ratio(c["dropped"], c["total"]),
                           "by_step": dict(sorted(steps.items(), key=lambda kv: -kv[1]))}
    steps_out = {step: {"dropped": c["dropped"], "precision": _ratio(c["should_drop"], c["dropped"])}
                 for step, c in per_step.items()}
    return {"documents": tp + fp + fn + tn, "without_truth": without_truth,
            "overall": {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "true_drops": tp,
                        "false_drops": fp, "missed": fn, "true_keeps": tn},
            "by_true_reason": reasons, "by_step": steps_out,
            "reached": {step: {reason: {"reached": c["reached"], "dropped": c["dropped"], "dropped_share": _ratio(c["dropped"], c["reached"])} for reason, c in by.items()}
                        for step, by in reach.items()}}
