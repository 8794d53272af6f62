"""LLM-as-judge: verdict and rubric parsing, the order swap and its summary against a scripted
OpenAI-compatible stub, and end to end against `chatforge serve` on loopback (a tiny random model whose
garbage outputs must be counted and kept, never dropped)."""

from __future__ import annotations

import json
import math

import pytest

openai = pytest.importorskip("openai")
starlette = pytest.importorskip("starlette")

from chatforge.evaluation.judge import (  # noqa: E402
    DIMENSIONS,
    EndpointJudge,
    JudgeConfig,
    LocalJudge,
    judge_pairwise,
    judge_single,
    parse_rubric,
    parse_verdict,
)
from chatforge.serve.server import BackgroundServer  # noqa: E402
from tiny_models import make_tiny_model  # noqa: E402


@pytest.mark.parametrize(
    "text, verdict, reason",
    [
        ("A is more accurate. [[A]]", "A", ""),
        ("Both fine.\n\nFinal verdict: [[C]]", "C", ""),
        ("[[ B ]]", "B", ""),
        ("I pick [[A]]. On reflection [[A]]", "A", ""),
        ("[[A]] or maybe [[B]]", None, "ambiguous_verdict"),
        ("Assistant A is better.", None, "no_verdict"),
        ("[A]", None, "no_verdict"),
        (None, None, "request_failed"),
    ],
)
def test_parse_verdict(text, verdict, reason):
    assert parse_verdict(text) == (verdict, reason)


def test_parse_rubric_json_lines_and_failures():
    json_text = 'Good answer.\n{"accuracy": 7, "instruction following": 8, "coverage": 6, "readability": 9, "harmlessness": 10}'
    assert parse_rubric(json_text) == ({"accuracy": 7, "instruction_following": 8, "coverage": 6, "readability": 9, "harmlessness": 10}, "")
    lines = "Accuracy: 3\n**Instruction following**: 4\n- coverage = 5\nReadability: 6.5\nharmlessness: 10/10"
    assert parse_rubric(lines) == ({"accuracy": 3, "instruction_following": 4, "coverage": 5, "readability": 6.5, "harmlessness": 10}, "")
    assert parse_rubric("accuracy: 7\ncoverage: 5") == (None, "missing_dimension")
    assert parse_rubric('{"accuracy": 0, "instruction_following": 8, "coverage": 6, "readability": 9, "harmlessness": 10}') == (None, "out_of_range")
    assert parse_rubric("no scores here") == (None, "missing_dimension")
    assert parse_rubric(None) == (None, "request_failed")


# -- a scripted OpenAI-compatible judge ---------------------------------------------------------

def _scripted_reply(model: str, user: str) -> str:
    """The stub judge's rules, chosen by the requested model name."""
    a_part = user.split("[The Start of Assistant A's Answer]")[-1].split("[The End of Assistant A's Answer]")[0]
    if model == "prefers-good":  # a consistent judge: the answer saying GOOD wins in either slot
        return "A says GOOD. [[A]]" if "GOOD" in a_part else "B says GOOD. [[B]]"
    if model == "always-a":  # pure position bias
        return "The first one. [[A]]"
    if model == "good-or-garbage":  # consistent where the question says so, else no verdict
        return ("[[A]]" if "GOOD" in a_part else "[[B]]") if "judge me" in user else "I cannot decide."
    if model == "rubric":
        if "GARBLED" in user:
            return "accuracy: nine"  # unparseable
        score = 9 if "GOOD" in user else 2
        return "Fine.\n" + json.dumps({d: score for d in DIMENSIONS})
    return "unknown stub model"


def _stub_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request):
        body = await request.json()
        user = body["messages"][-1]["content"]
        text = _scripted_reply(body["model"], user)
        return JSONResponse({
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })

    async def models(request):
        return JSONResponse({"object": "list", "data": [{"id": "prefers-good", "object": "model", "created": 0, "owned_by": "stub"}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)])


@pytest.fixture(scope="module")
def stub_url():
    with BackgroundServer(_stub_app()) as url:
        yield url + "/v1"


QUESTIONS = ["q1 judge me", "q2 judge me", "q3 judge me", "q4"]
ANSWERS = ["GOOD one", "bad one", "GOOD two", "GOOD three"]
OPPONENTS = ["bad", "GOOD ref", "bad", "bad"]


def test_consistent_judge_wins_and_losses(stub_url):
    judge = EndpointJudge(JudgeConfig(base_url=stub_url, model="prefers-good"))
    result = judge_pairwise(judge, QUESTIONS, ANSWERS, OPPONENTS, groups=["x", "x", "y", "y"])
    assert (result["win"], result["tie"], result["loss"]) == (0.75, 0.0, 0.25)
    assert result["score"] == 0.75 and result["consistency"] == 1.0
    # Answers first in order 1, second in order 2: the good one sat in A half the time.
    assert result["first_position"] == 0.5
    assert result["unparseable"] == [] and result["complete"] == 4
    assert result["per_group"]["x"]["win"] == 0.5 and result["per_group"]["y"]["win"] == 1.0
    first = result["rows"][0]
    assert (first["verdict_first"], first["verdict_second"]) == ("A", "B")


def test_position_biased_judge_is_all_ties(stub_url):
    judge = EndpointJudge(JudgeConfig(base_url=stub_url, model="always-a"))
    result = judge_pairwise(judge, QUESTIONS, ANSWERS, OPPONENTS)
    # Always "[[A]]": a win in one order, a loss in the other -> never consistent, every comparison a tie.
    assert (result["win"], result["tie"], result["loss"]) == (0.0, 1.0, 0.0)
    assert result["score"] == 0.5 and result["consistency"] == 0.0 and result["first_position"] == 1.0


def test_unparseable_comparisons_are_counted_and_kept(stub_url):
    judge = EndpointJudge(JudgeConfig(base_url=stub_url, model="good-or-garbage"))
    result = judge_pairwise(judge, QUESTIONS, ANSWERS, OPPONENTS)
    assert result["comparisons"] == 4 and result["complete"] == 3 and result["unparseable_comparisons"] == 1
    assert [(u["index"], u["order"], u["reason"], u["raw"]) for u in result["unparseable"]] == [
        (3, "first", "no_verdict", "I cannot decide."), (3, "second", "no_verdict", "I cannot decide."),
    ]
    assert result["win"] == 2 / 3 and result["loss"] == 1 / 3


def test_single_grading_means_and_unparseable(stub_url):
    judge = EndpointJudge(JudgeConfig(base_url=stub_url, model="rubric"))
    result = judge_single(judge, ["a", "b", "c"], ["GOOD", "meh", "GARBLED"])
    assert result["graded"] == 2 and result["unparseable_answers"] == 1
    assert result["accuracy"] == 5.5 and result["overall"] == 5.5
    assert result["unparseable"] == [{"index": 2, "reason": "missing_dimension", "raw": "accuracy: nine"}]


def test_model_from_the_endpoint_list_and_key_from_env(stub_url, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "secret")
    judge = EndpointJudge(JudgeConfig(base_url=stub_url, api_key_env="MY_JUDGE_KEY"))
    assert judge.model == "prefers-good" and judge.client.api_key == "secret"


def test_unreachable_endpoint_counts_request_failures():
    judge = EndpointJudge(JudgeConfig(base_url="http://127.0.0.1:9/v1", model="m", max_retries=0, timeout_s=5))
    result = judge_pairwise(judge, ["q"], ["a"], ["b"])
    assert result["unparseable_comparisons"] == 1
    assert {u["reason"] for u in result["unparseable"]} == {"request_failed"}
    assert judge.errors and math.isnan(result["win"])


def test_config_rejects_both_judges():
    with pytest.raises(ValueError, match="not both"):
        JudgeConfig(base_url="http://x/v1", model_dir="/tmp/m")


# -- end to end: `chatforge serve` on loopback ---------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_tokenizer):
    out = tmp_path_factory.mktemp("judge_model")
    make_tiny_model(vocab_size=384, seed=5, tie_word_embeddings=False, max_position_embeddings=1024).save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def served(tiny_dir):
    from chatforge.serve import ServeConfig
    from chatforge.serve.server import build

    cfg = ServeConfig(model_dir=str(tiny_dir), model_name="tiny-judge", max_tokens=24, log_level="warning")
    with BackgroundServer(build(cfg)) as url:
        yield url + "/v1"


def _prompts(path):
    rows = [
        {"prompt": [{"role": "user", "content": "What is 2 + 3?"}], "reference": "The answer is 5.", "category": "math"},
        {"prompt": "Name a colour.", "reference": "Blue.", "category": "open"},
        {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}], "category": "open"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_stage_with_a_served_judge(served, tiny_dir, tmp_path, capsys):
    from chatforge.cli import main

    prompts = _prompts(tmp_path / "prompts.jsonl")
    out = tmp_path / "eval.json"
    judge = f"{{base_url: '{served}', model: tiny-judge, max_tokens: 24, concurrency: 2}}"
    tasks = (
        f"[{{kind: judge, name: pairwise, path: '{prompts}', max_new_tokens: 8, judge: {judge}}},"
        f" {{kind: judge, name: rubric, mode: single, path: '{prompts}', max_new_tokens: 8, judge: {judge}}}]"
    )
    code = main(["eval", f"models=[{tiny_dir}]", "labels=[tiny]", f"tasks={tasks}", f"out={out}", "plot=false"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "pairwise / unparseable" in printed and "rubric / unparseable" in printed
    report = json.loads(out.read_text())
    pairwise = report["results"]["tiny"]["pairwise"]
    # A random tiny model never writes "[[A]]": every comparison is unparseable, counted, and kept raw.
    assert pairwise["metrics"]["unparseable"] == 3
    assert len(pairwise["details"]["unparseable"]) == 6
    assert all(isinstance(u["raw"], str) for u in pairwise["details"]["unparseable"])
    assert pairwise["details"]["judge"] == f"tiny-judge @ {served}"
    rubric = report["results"]["tiny"]["rubric"]
    assert rubric["metrics"]["unparseable"] == 3 and rubric["details"]["graded"] == 0
    # ... and written to the reject log, by reason.
    assert report["rejected"] == {"judge_no_verdict": 6, "judge_missing_dimension": 3}
    rejected = [json.loads(line) for line in out.with_suffix(".rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == 9 and rejected[0]["source"].endswith("prompts.jsonl:1")


def test_local_model_dir_judge(tiny_dir):
    judge = LocalJudge(JudgeConfig(model_dir=str(tiny_dir), max_tokens=12))
    result = judge_pairwise(judge, ["q1", "q2"], ["a1", "a2"], ["b1", "b2"])
    assert result["comparisons"] == 2
    assert len(result["unparseable"]) + 2 * result["complete"] == 4  # every output accounted for
    assert all(r["raw_first"] is not None for r in result["rows"])
