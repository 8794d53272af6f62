"""LLM-as-judge: pairwise comparison (both orders) and single-answer grading on a 5-dimension rubric.

The judge is any OpenAI-compatible chat endpoint (`chatforge serve`, vLLM, a hosted API; base URL
and model from the config or the environment, the key from the environment variable the config
names) or a local model directory answered greedily through chatforge's sampler.

Pairwise (MT-Bench style): the judge sees the question and two answers, A and B, and must end with
"[[A]]", "[[B]]" or "[[C]]" (tie). Every comparison is asked twice, the answers swapped the second
time, because judges favour a position. A comparison counts as a win (loss) only when both orders
agree on it; anything else is a tie. Reported: win / tie / loss rates, `score` (the two orders'
points averaged: win 1, tie 0.5, loss 0), `consistency` (share of comparisons whose two verdicts
agree) and `first_position` (share of verdicts that picked whichever answer was shown first).

Single-answer grading: the judge scores one answer 1-10 on each dimension of the rubric the seed
recommends (accuracy, instruction following, coverage, readability, harmlessness), as a JSON object
or as "accuracy: 7" lines; `overall` is their mean.

A judge output that cannot be parsed is never dropped: it is counted by reason
(`no_verdict`, `ambiguous_verdict`, `missing_dimension`, `out_of_range`, `request_failed`), kept
with its raw text in the result's `unparseable` list, and left out of the means (each mean says over
how many it is taken).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from pydantic import Field, model_validator

from chatforge.config.base import StrictModel
from chatforge.errors import ConfigError

DIMENSIONS = ("accuracy", "instruction_following", "coverage", "readability", "harmlessness")
BASE_URL_ENV = "CHATFORGE_JUDGE_BASE_URL"
MODEL_ENV = "CHATFORGE_JUDGE_MODEL"

PAIRWISE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. Choose the assistant that follows the user's instructions and answers "
    "the user's question better, considering accuracy, instruction following, coverage, readability and "
    "harmlessness. Avoid any position bias: the order in which the responses were presented must not influence "
    "your decision, nor their length, nor the assistants' names. Be as objective as possible. After a short "
    'explanation, output your final verdict by strictly following this format: "[[A]]" if assistant A is better, '
    '"[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)
PAIRWISE_USER = (
    "[User Question]\n{question}\n\n"
    "[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
)
SINGLE_SYSTEM = (
    "Please act as an impartial judge and grade the response of an AI assistant to the user question displayed "
    "below. Score it from 1 (worst) to 10 (best) on each of these dimensions, in order of importance: accuracy "
    "(is it factually correct), instruction_following (does it do what was asked, in the asked form), coverage "
    "(does it address every part of the question), readability (is it clear and well organised), harmlessness "
    "(is it safe and free of harmful content). After a short explanation, output the scores as one JSON object, "
    'exactly like: {"accuracy": 7, "instruction_following": 8, "coverage": 6, "readability": 9, "harmlessness": 10}'
)
SINGLE_USER = "[User Question]\n{question}\n{reference}\n[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
REFERENCE_BLOCK = "\n[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]\n"


class JudgeConfig(StrictModel):
    base_url: str | None = Field(
        None, description=f"OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (default: ${BASE_URL_ENV})"
    )
    model: str | None = Field(None, description=f"judge model name at the endpoint (default: ${MODEL_ENV}, else the first listed)")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the endpoint's API key")
    model_dir: str | None = Field(None, description="a local model directory as judge instead of an endpoint")
    temperature: float = Field(0.0, ge=0.0, description="judge sampling temperature (0 = greedy)")
    max_tokens: int = Field(512, ge=1, description="judge output tokens at most")
    concurrency: int = Field(4, ge=1, description="requests in flight at once (endpoint judges)")
    timeout_s: float = Field(120.0, gt=0, description="seconds per request")
    max_retries: int = Field(2, ge=0, description="retries of a failed request (the openai client's backoff)")

    @model_validator(mode="after")
    def _one_judge(self) -> JudgeConfig:
        if self.model_dir is not None and self.base_url is not None:
            raise ValueError("judge: give base_url (an endpoint) or model_dir (a local model), not both")
        return self


class Judge(Protocol):
    name: str

    def complete(self, conversations: Sequence[list[dict]]) -> list[str | None]:
        """The judge's reply to each conversation; None where the request failed."""
        ...


class EndpointJudge:
    """A judge behind an OpenAI-compatible `/v1/chat/completions` endpoint (the `openai` client)."""

    def __init__(self, cfg: JudgeConfig):
        import openai

        base_url = cfg.base_url or os.environ.get(BASE_URL_ENV)
        if not base_url:
            raise ConfigError(f"judge: no endpoint; set judge.base_url, ${BASE_URL_ENV}, or judge.model_dir")
        key = os.environ.get(cfg.api_key_env) or "none"  # local servers without --api-key accept any key
        self.client = openai.OpenAI(base_url=base_url, api_key=key, timeout=cfg.timeout_s, max_retries=cfg.max_retries)
        self.cfg = cfg
        self.model = cfg.model or os.environ.get(MODEL_ENV) or self._first_model(base_url)
        self.name = f"{self.model} @ {base_url}"
        self.errors: list[str] = []

    def _first_model(self, base_url: str) -> str:
        import openai

        try:
            models = [m.id for m in self.client.models.list().data]
        except openai.OpenAIError as exc:
            raise ConfigError(f"judge: cannot list the models of {base_url} ({type(exc).__name__}: {exc}); set judge.model") from None
        if not models:
            raise ConfigError(f"judge: {base_url} lists no models; set judge.model")
        return models[0]

    def _one(self, messages: list[dict]) -> str | None:
        import openai

        try:
            reply = self.client.chat.completions.create(
                model=self.model, messages=messages, temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens
            )
        except openai.OpenAIError as exc:
            self.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            return None
        return reply.choices[0].message.content or ""

    def complete(self, conversations: Sequence[list[dict]]) -> list[str | None]:
        with ThreadPoolExecutor(self.cfg.concurrency) as pool:
            return list(pool.map(self._one, conversations))


class LocalJudge:
    """A local model directory as judge: its chat template, chatforge's sampler, greedy by default."""

    def __init__(self, cfg: JudgeConfig, device: str = "auto"):
        from chatforge.sampling import Sampler, SamplingConfig
        from chatforge.serve.server import load_model

        model, self.tokenizer = load_model(cfg.model_dir, device)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(f"judge: the tokenizer of {cfg.model_dir} has no chat template")
        self.sampler = Sampler(model, self.tokenizer)
        self.sampling = SamplingConfig(temperature=cfg.temperature, max_new_tokens=cfg.max_tokens, seed=0)
        self.limit = getattr(model.config, "max_position_embeddings", None)
        self.name = str(cfg.model_dir)
        self.errors: list[str] = []

    def complete(self, conversations: Sequence[list[dict]]) -> list[str | None]:
        from chatforge.sampling import chat_prompt

        prompts, out = [], [None] * len(conversations)
        keep = []
        for i, messages in enumerate(conversations):
            ids = chat_prompt(self.tokenizer, messages)
            if self.limit is not None and len(ids) >= self.limit:
                self.errors.append(f"conversation {i}: {len(ids)} tokens, the judge attends to {self.limit}")
                continue
            prompts.append(ids)
            keep.append(i)
        for i, (completion,) in zip(keep, self.sampler.generate(prompts, self.sampling)):
            out[i] = completion.text
        return out


def make_judge(cfg: JudgeConfig, device: str = "auto") -> Judge:
    return LocalJudge(cfg, device) if cfg.model_dir is not None else EndpointJudge(cfg)


# -- parsing ------------------------------------------------------------------------------------

_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")


def parse_verdict(text: str | None) -> tuple[str | None, str]:
    """("A" | "B" | "C", "") or (None, reason). Several different verdicts are ambiguous."""
    if text is None:
        return None, "request_failed"
    found = set(_VERDICT.findall(text))
    if len(found) == 1:
        return found.pop(), ""
    return None, "ambiguous_verdict" if found else "no_verdict"


def _dimension_pattern(dim: str) -> re.Pattern:
    words = r"[\s_-]*".join(dim.split("_"))
    return re.compile(rf"(?im)^[\s*#>-]*\**{words}\**\s*[:=]\s*\**\s*(\d+(?:\.\d+)?)")


_DIM_PATTERNS = {dim: _dimension_pattern(dim) for dim in DIMENSIONS}


def parse_rubric(text: str | None) -> tuple[dict[str, float] | None, str]:
    """({dimension: score}, "") from a JSON object or "dimension: score" lines, or (None, reason)."""
    if text is None:
        return None, "request_failed"
    scores = _rubric_from_json(text)
    if scores is None:
        scores = {}
        for dim, pattern in _DIM_PATTERNS.items():
            match = pattern.findall(text)
            if match:
                scores[dim] = float(match[-1])
    missing = [d for d in DIMENSIONS if d not in scores]
    if missing:
        return None, "missing_dimension"
    if any(not 1 <= scores[d] <= 10 for d in DIMENSIONS):
        return None, "out_of_range"
    return {d: scores[d] for d in DIMENSIONS}, ""


def _rubric_from_json(text: str) -> dict[str, float] | None:
    for match in reversed(re.findall(r"\{[^{}]*\}", text)):
        try:
            obj = json.loads(match)
        except json.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        normal = {re.sub(r"[\s-]+", "_", str(k).strip().lower()): v for k, v in obj.items()}
        scores = {}
        for dim in DIMENSIONS:
            value = normal.get(dim)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                scores[dim] = float(value)
        if scores:
            return scores
    return None


# -- the two protocols --------------------------------------------------------------------------

def pairwise_messages(question: str, answer_a: str, answer_b: str) -> list[dict]:
    return [
        {"role": "system", "content": PAIRWISE_SYSTEM},
        {"role": "user", "content": PAIRWISE_USER.format(question=question, answer_a=answer_a, answer_b=answer_b)},
    ]


def single_messages(question: str, answer: str, reference: str | None = None) -> list[dict]:
    block = REFERENCE_BLOCK.format(reference=reference) if reference else ""
    return [
        {"role": "system", "content": SINGLE_SYSTEM},
        {"role": "user", "content": SINGLE_USER.format(question=question, reference=block, answer=answer)},
    ]


_OUTCOME = {"A": ("win", "loss"), "B": ("loss", "win"), "C": ("tie", "tie")}  # verdict -> (model first, model second)
_POINTS = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def judge_pairwise(
    judge: Judge,
    questions: Sequence[str],
    answers: Sequence[str],
    opponents: Sequence[str],
    groups: Sequence[str] | None = None,
) -> dict:
    """Compare `answers[i]` with `opponents[i]`, once with the answer first and once second.

    Returns rates from the answers' side (`win`, `tie`, `loss`, `score`), `consistency`,
    `first_position`, per group, the unparseable outputs by reason, and one row per comparison.
    """
    n = len(questions)
    if not len(answers) == len(opponents) == n:
        raise ValueError(f"judge_pairwise: {n} questions, {len(answers)} answers, {len(opponents)} opponents")
    conversations = [pairwise_messages(q, a, o) for q, a, o in zip(questions, answers, opponents)]
    conversations += [pairwise_messages(q, o, a) for q, a, o in zip(questions, answers, opponents)]
    replies = judge.complete(conversations)
    rows, unparseable = [], []
    for i in range(n):
        row = {"index": i, "group": groups[i] if groups else "all"}
        for order, reply in (("first", replies[i]), ("second", replies[n + i])):
            verdict, reason = parse_verdict(reply)
            row[f"verdict_{order}"] = verdict
            row[f"raw_{order}"] = reply
            if verdict is None:
                unparseable.append({"index": i, "order": order, "reason": reason, "raw": reply})
        rows.append(row)
    return {**_pairwise_summary(rows), "unparseable": unparseable, "rows": rows, "judge": judge.name}


def _pairwise_summary(rows: list[dict]) -> dict:
    def summarise(part: list[dict]) -> dict:
        complete = [r for r in part if r["verdict_first"] and r["verdict_second"]]
        outcome, points, agree, first_pos, verdicts = Counter(), 0.0, 0, 0, 0
        for r in complete:
            seen_first = _OUTCOME[r["verdict_first"]][0]  # the answer was shown as A
            seen_second = _OUTCOME[r["verdict_second"]][1]  # the answer was shown as B
            agree += seen_first == seen_second
            outcome[seen_first if seen_first == seen_second else "tie"] += 1
            points += (_POINTS[seen_first] + _POINTS[seen_second]) / 2
        for r in part:
            for key in ("verdict_first", "verdict_second"):
                if r[key] is not None:
                    verdicts += 1
                    first_pos += r[key] == "A"
        m = len(complete)
        return {
            "comparisons": len(part), "complete": m, "unparseable_comparisons": len(part) - m,
            **{k: (outcome[k] / m if m else float("nan")) for k in ("win", "tie", "loss")},
            "score": points / m if m else float("nan"),
            "consistency": agree / m if m else float("nan"),
            "first_position": first_pos / verdicts if verdicts else float("nan"),
        }

    by_group = defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)
    out = summarise(rows)
    out["per_group"] = {g: summarise(part) for g, part in sorted(by_group.items())} if len(by_group) > 1 else {}
    return out


def judge_single(
    judge: Judge,
    questions: Sequence[str],
    answers: Sequence[str],
    references: Sequence[str | None] | None = None,
    groups: Sequence[str] | None = None,
) -> dict:
    """Rubric scores (1-10 per dimension, and their mean `overall`) of each answer, averaged."""
    references = references or [None] * len(questions)
    conversations = [single_messages(q, a, r) for q, a, r in zip(questions, answers, references)]
    replies = judge.complete(conversations)
    rows, unparseable = [], []
    for i, reply in enumerate(replies):
        scores, reason = parse_rubric(reply)
        rows.append({"index": i, "group": groups[i] if groups else "all", "scores": scores, "raw": reply})
        if scores is None:
            unparseable.append({"index": i, "reason": reason, "raw": reply})

    def summarise(part: list[dict]) -> dict:
        graded = [r["scores"] for r in part if r["scores"] is not None]
        means = {d: (sum(s[d] for s in graded) / len(graded) if graded else float("nan")) for d in DIMENSIONS}
        overall = sum(means.values()) / len(DIMENSIONS) if graded else float("nan")
        return {"answers": len(part), "graded": len(graded), "unparseable_answers": len(part) - len(graded), **means, "overall": overall}

    by_group = defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)
    out = summarise(rows)
    out["per_group"] = {g: summarise(part) for g, part in sorted(by_group.items())} if len(by_group) > 1 else {}
    return {**out, "unparseable": unparseable, "rows": rows, "judge": judge.name}


def unparseable_reasons(result: dict) -> dict[str, int]:
    return dict(Counter(u["reason"] for u in result.get("unparseable", [])))
