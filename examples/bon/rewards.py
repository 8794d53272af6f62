"""Example reward functions for `scorer.kind=function` (see docs/best_of_n.md).

Run from the repo root with this folder on the import path:
    PYTHONPATH=examples/bon chatforge bon examples/bon/world_gold.yaml scorer.kind=function scorer.path=rewards:exact_match

Per pair:  fn(prompt, response, **kwargs) -> float
Batched:   fn(prompts, responses, **kwargs) -> list[float]   (scorer.batched=true)
In `chatforge bon`, `prompt` is the input record: its `prompt` field holds the messages, the other
fields (`task`, `answer`, ...) are kept.
"""

from __future__ import annotations

from chatforge.world.answers import extract_final_answer


def exact_match(prompt: dict, response: str) -> float:
    """1.0 when the final answer of the response is the record's `answer` as text, else 0.0."""
    given = extract_final_answer(response)
    return float(given is not None and given.strip().lower() == str(prompt["answer"]).strip().lower())


def shorter_is_better(prompts: list[dict], responses: list[str], budget: int = 20) -> list[float]:
    """Batched: 1 up to `budget` words, then falling by 1/budget per extra word (a length-only proxy)."""
    return [1.0 - max(0, len(r.split()) - budget) / budget for r in responses]
