"""Exact match of greedy answers to held-out instructions, per task type.

Each record is a conversation whose last message is the reference answer; the model answers the
conversation without it (rendered with the tokenizer's chat template and its generation prompt),
greedily, stopping at the template's end-of-turn token. The answer is checked by the task world's
checker (`scoring.world.instruction_correct`: the final answer, numbers compared as numbers, refusals for
the safety slice) or, for other data, by exact match against the record's `answers` list.

Generation goes through the project's one sampler (`chatforge.sampling.Sampler`, temperature 0:
argmax decoding with a KV cache, the same tokens as `transformers`' greedy `generate`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Literal

from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.errors import DataError
from chatforge.run_dir import RejectLog

Checker = Literal["world", "answers"]


class InstructionEval(StrictModel):
    path: str = Field(description="JSONL of held-out conversations (messages; task_type; answers for checker=answers)")
    checker: Checker = Field("world", description="world: the task world's checker; answers: exact match to `answers`")
    max_examples: int | None = Field(200, ge=1, description="score the first N records (None: all)")
    max_new_tokens: int = Field(64, ge=1, description="answer length limit")
    batch_size: int = Field(16, ge=1, description="prompts per generate call")


def load_records(cfg: InstructionEval, rejects: RejectLog) -> list[dict]:
    """The first `max_examples` usable records, each with its line in `_where`; unreadable lines and records without a reference
    answer (or, for checker=answers, without `answers`) go to `rejects`."""
    from chatforge.data.records import RecordError, jsonl_objects

    def parse(record: dict, source: str, where: str) -> dict:
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "assistant":
            raise RecordError("bad_field", "field 'messages' must end with the reference assistant answer")
        if cfg.checker == "answers" and not isinstance(record.get("answers"), list):
            raise RecordError("bad_field", "checker=answers needs a list field 'answers'")
        return {**record, "_where": where}

    records = jsonl_objects(cfg.path, parse, rejects, "instruction eval: file", cfg.max_examples)
    if not records:
        raise DataError(f"instruction eval: {cfg.path}: no usable records ({rejects.summary_line()})")
    return records


def greedy_answers(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy continuations of chat `prompts` (message lists), up to the first end-of-turn token,
    through the project's sampler (temperature 0)."""
    from chatforge.sampling import Sampler, SamplingConfig, chat_prompt
    from chatforge.sft.masking import end_of_turn_ids

    # Stop at the template's end-of-turn tokens only (not eos as well), as the answers were scored before.
    cfg = SamplingConfig(
        temperature=0.0, max_new_tokens=max_new_tokens, max_batch_size=batch_size, stop_token_ids=end_of_turn_ids(tokenizer)
    )
    completions = Sampler(model, tokenizer).generate([chat_prompt(tokenizer, p) for p in prompts], cfg)
    return [c[0].text.strip() for c in completions]


def _correct(record: dict, answer: str, checker: Checker) -> bool:
    if checker == "world":
        from chatforge.scoring.world import instruction_correct

        return instruction_correct(record["messages"][:-1], answer)
    return answer.strip() in [str(a).strip() for a in record["answers"]]


def exact_match(
    model, tokenizer, cfg: InstructionEval, keep: int = 3, prompt_transform=None, rejects: RejectLog | None = None
) -> dict:
    """{"accuracy", "correct", "total", "per_task": {task_type: {...}}, "examples": a few answers,
    "rejected": {reason: count} of the records skipped}.

    `prompt_transform` rewrites each prompt's messages before generation (e.g. C-RLFT's class
    condition); the checker always sees the original prompt. Skipped records (unreadable, or a prompt
    longer than the model's positions: `prompt_too_long`) go to `rejects` (a stage's rejected.jsonl)
    when given, else they are only counted.
    """
    from chatforge.sampling import chat_prompt, max_positions

    rejects = rejects if rejects is not None else RejectLog(None)
    before = Counter(rejects.counts)
    records = load_records(cfg, rejects)
    prompts = [r["messages"][:-1] for r in records]
    if prompt_transform is not None:
        prompts = [prompt_transform(p) for p in prompts]
    # The sampler refuses a prompt that leaves the model no position to answer in: reject those here.
    limit = max_positions(model)
    if limit is not None:
        fits = [len(chat_prompt(tokenizer, p)) < limit for p in prompts]
        for record, ok in zip(records, fits):
            if not ok:
                rejects.add(cfg.path, record["_where"], "prompt_too_long", f"the prompt fills the model's {limit} positions", record)
        records = [r for r, ok in zip(records, fits) if ok]
        prompts = [p for p, ok in zip(prompts, fits) if ok]
        if not records:
            raise DataError(f"instruction eval: {cfg.path}: every prompt is longer than the model's {limit} positions")
    answers = greedy_answers(model, tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size)
    per_task: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    examples = []
    for record, answer in zip(records, answers):
        ok = _correct(record, answer, cfg.checker)
        task = str(record.get("task_type") or record.get("task") or "all")
        per_task[task][0] += ok
        per_task[task][1] += 1
        if len(examples) < keep:
            examples.append({"prompt": record["messages"][-2]["content"][:200], "answer": answer[:200], "correct": ok})
    correct = sum(c for c, _ in per_task.values())
    return {
        "accuracy": correct / len(records),
        "correct": correct,
        "total": len(records),
        "per_task": {t: {"accuracy": c / n, "correct": c, "total": n} for t, (c, n) in sorted(per_task.items())},
        "examples": examples,
        "rejected": dict(rejects.counts - before),
    }


def format_exact_match_table(before: dict | None, after: dict) -> str:
    tasks = sorted(after["per_task"])
    header = f"{'task type':<14}{'n':>5}{'base':>9}{'after':>9}"
    lines = [header, "-" * len(header)]
    for task in [*tasks, "all"]:
        a = after if task == "all" else after["per_task"][task]
        b = None if before is None else (before if task == "all" else before["per_task"].get(task))
        base = f"{b['accuracy']:>9.3f}" if b else f"{'-':>9}"
        lines.append(f"{task:<14}{a['total']:>5}{base}{a['accuracy']:>9.3f}")
    return "\n".join(lines)
