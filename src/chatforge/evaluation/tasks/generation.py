"""Generation on prompts with checkable answers: exact match (greedy), pass@k and majority vote over n samples.

Records (JSONL): `prompt` (messages or a string) or `messages` ending with the reference answer.
Checkers: `world` (the task world's: verifiable records with `task`/`answer`, instruction records by
their conversation), `answers` (the response, stripped, equals one of the record's `answers`, or its
final "The answer is X" does) or `function:pkg.mod:fn` (fn(record, response) -> bool).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from chatforge.errors import ConfigError
from chatforge.evaluation.tasks.base import ModelContext, TaskBase, prompt_of, read_jsonl
from chatforge.sampling.config import SamplingConfig


class GenerationTask(TaskBase):
    kind: Literal["generation"] = "generation"
    path: str = Field(description="JSONL of prompts with checkable answers")
    checker: str = Field("world", description="world | answers | function:pkg.mod:fn (fn(record, response) -> bool)")
    max_examples: int | None = Field(100, ge=1, description="first N records (None: all)")
    greedy: bool = Field(True, description="also answer greedily once: exact_match")
    n: int = Field(0, ge=0, description="samples per prompt for pass@k and maj@n (0: none)")
    ks: list[int] = Field(default_factory=lambda: [1], description="k values of pass@k (each <= n)")
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.8, max_new_tokens=96, seed=0),
        description="sampling settings of the n samples (sampling.n is replaced by n)",
    )
    max_new_tokens: int = Field(96, ge=1, description="greedy answer length limit")
    group_field: str = Field("task", description="record field the metrics are grouped by")

    @field_validator("checker")
    @classmethod
    def _checker(cls, value: str) -> str:
        if value not in ("world", "answers") and not value.startswith("function:"):
            raise ValueError(f"checker {value!r}: use world, answers or function:pkg.mod:fn")
        return value

    def check(self) -> None:
        if not self.greedy and self.n == 0:
            raise ConfigError("n: greedy is false and n is 0: nothing to measure (set greedy: true or n >= 1)")
        if any(k < 1 for k in self.ks):  # else pass_at_k's ValueError, after every sample was drawn
            raise ConfigError(f"ks: {self.ks} has k below 1; pass@k draws k >= 1 of the n samples")
        above = [k for k in self.ks if self.n and k > self.n]
        if above:
            raise ConfigError(f"ks: {self.ks} has k above n={self.n} ({above}); pass@k draws k of the n samples")


def run(ctx: ModelContext, cfg: GenerationTask) -> dict:
    from chatforge.evaluation.sampled import sampled_metrics
    from chatforge.sampling import Sampler, chat_prompt
    from chatforge.scoring.checks import make_checker

    cfg.check()
    check = make_checker(cfg.checker)  # scoring.checks: the world's checker lives behind scoring/
    records = read_jsonl(cfg.path, ctx.rejects, cfg.max_examples, asks=True)
    prompts = [chat_prompt(ctx.tokenizer, prompt_of(r)) for r in records]
    sampler = Sampler(ctx.model, ctx.tokenizer)
    metrics: dict[str, float] = {}
    details: dict = {"prompts": len(records)}
    greedy_texts = None
    if cfg.greedy:
        greedy_cfg = SamplingConfig(temperature=0.0, max_new_tokens=cfg.max_new_tokens, max_batch_size=cfg.sampling.max_batch_size)
        greedy_texts = [c[0].text for c in sampler.generate(prompts, greedy_cfg)]
        correct = [bool(check(r, t)) for r, t in zip(records, greedy_texts)]
        metrics["exact_match"] = sum(correct) / len(records)
        details["examples"] = [
            {"where": r["_where"], "answer": t[:200], "correct": ok} for r, t, ok in list(zip(records, greedy_texts, correct))[:5]
        ]
    if cfg.n:
        sampling = cfg.sampling.model_copy(update={"n": cfg.n})
        samples = [[c.text for c in row] for row in sampler.generate(prompts, sampling)]
        scored = sampled_metrics(records, samples, check, cfg.ks, greedy_texts, cfg.group_field)
        metrics |= {k: v for k, v in scored["all"].items() if k.startswith(("pass@", "maj@"))}
        for group, row in scored["by_group"].items():
            if len(scored["by_group"]) > 1:
                metrics |= {f"{k}/{group}": v for k, v in row.items() if k.startswith(("pass@", "maj@", "greedy"))}
        details["sampled"] = {"all": scored["all"], "by_group": scored["by_group"]}
    return {"metrics": metrics, "details": details}
