"""LLM-as-judge task: the model answers held-out prompts greedily; a judge compares or grades the answers.

`mode: pairwise` compares each answer with an opponent's (`opponent: reference` = the record's
`reference` / `chosen` / final assistant message; `opponent: model:DIR` = another model's greedy answer),
in both orders (see `chatforge.evaluation.judge`). `mode: single` grades each answer on the rubric.
Unparseable judge outputs are counted in the metrics, written to the reject log and kept with their
raw text in eval.json.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from chatforge.errors import DataError
from chatforge.evaluation.judge import (
    JudgeConfig,
    judge_pairwise,
    judge_single,
    make_judge,
    unparseable_reasons,
)
from chatforge.evaluation.tasks.base import ModelContext, TaskBase, prompt_of, question_text, read_jsonl

_JUDGES: dict = {}  # one judge per config for the whole suite (a local judge model is loaded once)


class JudgeTask(TaskBase):
    kind: Literal["judge"] = "judge"
    path: str = Field(description="JSONL of prompts (prompt or messages; reference for opponent=reference)")
    mode: Literal["pairwise", "single"] = Field("pairwise", description="pairwise: vs an opponent, both orders; single: rubric 1-10")
    opponent: str = Field("reference", description="pairwise: reference (the record's answer) or model:DIR")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="the judge: an endpoint or a local model dir")
    max_examples: int | None = Field(50, ge=1, description="first N prompts (None: all)")
    max_new_tokens: int = Field(128, ge=1, description="answer length limit of the evaluated model")
    group_field: str = Field("category", description="record field results are grouped by (falls back to `task`)")
    keep_rows: bool = Field(True, description="store every judge output (raw text and verdicts) in eval.json")

    @field_validator("opponent")
    @classmethod
    def _opponent(cls, value: str) -> str:
        if value != "reference" and not value.startswith("model:"):
            raise ValueError(f"opponent {value!r}: use reference or model:DIR")
        return value


def reference_answer(record: dict) -> str | None:
    for key in ("reference", "chosen"):
        if isinstance(record.get(key), str):
            return record[key]
    messages = record.get("messages")
    if isinstance(messages, list) and messages and messages[-1].get("role") == "assistant":
        return messages[-1].get("content")
    return None


def greedy_answers(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int) -> list[str]:
    from chatforge.sampling import Sampler, SamplingConfig, chat_prompt

    cfg = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens)
    return [c[0].text for c in Sampler(model, tokenizer).generate([chat_prompt(tokenizer, p) for p in prompts], cfg)]


def _get_judge(cfg: JudgeConfig, device: str):
    key = cfg.model_dump_json()
    if key not in _JUDGES:
        _JUDGES[key] = make_judge(cfg, device)
    return _JUDGES[key]


def run(ctx: ModelContext, cfg: JudgeTask) -> dict:
    records = read_jsonl(cfg.path, ctx.rejects, cfg.max_examples, asks=True)
    prompts = [prompt_of(r) for r in records]
    questions = [question_text(p) for p in prompts]
    groups = [str(r.get(cfg.group_field, r.get("task", "all"))) for r in records]
    answers = greedy_answers(ctx.model, ctx.tokenizer, prompts, cfg.max_new_tokens)
    judge = _get_judge(cfg.judge, ctx.device)
    if cfg.mode == "single":
        result = judge_single(judge, questions, answers, [reference_answer(r) for r in records], groups)
        metrics = {k: result[k] for k in ("overall", "accuracy", "instruction_following", "coverage", "readability", "harmlessness")}
        metrics["unparseable"] = result["unparseable_answers"]
    else:
        if cfg.opponent == "reference":
            opponents = [reference_answer(r) for r in records]
            missing = [r["_where"] for r, o in zip(records, opponents) if o is None]
            if missing:
                raise DataError(f"{missing[0]}: opponent=reference needs a `reference` or `chosen` field or a final assistant message")
        else:
            from chatforge.serve.server import load_model

            model, tokenizer = load_model(cfg.opponent.removeprefix("model:"), ctx.device)
            opponents = greedy_answers(model, tokenizer, prompts, cfg.max_new_tokens)
            del model
        result = judge_pairwise(judge, questions, answers, opponents, groups)
        for i, row in enumerate(result["rows"]):
            row["answer"], row["opponent"] = answers[i], opponents[i]
        metrics = {k: result[k] for k in ("score", "win", "tie", "loss", "consistency", "first_position")}
        metrics["unparseable"] = result["unparseable_comparisons"]
    for item in result["unparseable"]:
        ctx.rejects.add(records[item["index"]]["_where"], item.get("order", ""), f"judge_{item['reason']}", "", item["raw"] or "")
    result["unparseable_reasons"] = unparseable_reasons(result)
    result["request_errors"] = list(getattr(judge, "errors", []))[:20]
    if not cfg.keep_rows:
        result.pop("rows")
    return {"metrics": metrics, "details": result}
