"""ReST-EM / rejection sampling: pass@k against enumeration, majority vote, selection rules, the stage."""

from __future__ import annotations

import itertools
import json

import pytest
import yaml

from chatforge.errors import ChatforgeError
from chatforge.evaluation.sampled import majority_answer, pass_at_k, sampled_metrics
from chatforge.selftrain.select import Scored, best_per_prompt, keep_correct, merge_best


@pytest.mark.parametrize("n,c", [(5, 0), (5, 1), (5, 3), (6, 6), (8, 2)])
def test_pass_at_k_equals_the_share_of_k_subsets_with_a_correct_sample(n, c):
    outcomes = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(outcomes, k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets), abs=1e-12)
    assert pass_at_k(n, c, 1) == pytest.approx(c / n)
    with pytest.raises(ValueError):
        pass_at_k(n, c, n + 1)


def test_majority_vote_ignores_missing_answers_and_breaks_ties_by_first_seen():
    assert majority_answer([None, "7", "8", "8", "7", None]) == "7"  # 2-2 tie: "7" came first
    assert majority_answer(["3", None, "5", "5"]) == "5"
    assert majority_answer([None, None]) is None


def test_sampled_metrics_by_hand():
    from chatforge.world.verifiable import check

    records = [{"task": "arithmetic", "answer": "12"}, {"task": "reverse", "answer": "tac"}]
    samples = [
        ["The answer is 12.", "The answer is 13.", "The answer is 12.", "no idea"],  # 2/4 right, vote 12
        ["The answer is tca.", "The answer is tca.", "The answer is tac.", "The answer is cat."],  # 1/4, vote tca
    ]
    greedy = ["The answer is 12.", "The answer is cat."]
    m = sampled_metrics(records, samples, check, [1, 2, 4], greedy)
    assert m["all"]["pass@1"] == pytest.approx((0.5 + 0.25) / 2)
    assert m["all"]["pass@2"] == pytest.approx((1 - 1 / 6 + 1 - 3 / 6) / 2)  # C(2,2)/C(4,2), C(3,2)/C(4,2)
    assert m["all"]["pass@4"] == 1.0
    assert m["all"]["maj@4"] == 0.5 and m["all"]["greedy"] == 0.5
    assert m["by_group"]["arithmetic"]["maj@4"] == 1.0 and m["by_group"]["reverse"]["maj@4"] == 0.0


def test_gain_over_base_is_paired_by_hand():
    from chatforge.stages.rest import gains_over

    base = {"per_prompt": [{"pass@1": 0.0}, {"pass@1": 0.5}, {"pass@1": 1.0}]}
    policy = {"per_prompt": [{"pass@1": 0.5}, {"pass@1": 0.5}, {"pass@1": 1.0}]}
    gain = gains_over(base, policy, ["pass@1"])["pass@1"]
    # differences 0.5, 0, 0: mean 1/6, sample sd sqrt(1/12), se sqrt(1/12) / sqrt(3) = 1/6, so 1.0 SE
    assert gain["gain"] == pytest.approx(1 / 6) and gain["se"] == pytest.approx(1 / 6) and gain["z"] == pytest.approx(1.0)
    with pytest.raises(ChatforgeError, match="same prompts"):
        gains_over(base, {"per_prompt": policy["per_prompt"][:2]}, ["pass@1"])


def test_keep_correct_dedupes_caps_per_prompt_and_is_seeded():
    samples = [Scored("a", f"r{i % 6}", 1.0) for i in range(12)] + [Scored("a", "wrong", 0.0), Scored("b", "x", 1.0)]
    kept = keep_correct(samples, cap=3, seed=7)
    a = [s.response for s in kept if s.prompt_id == "a"]
    assert len(a) == 3 and len(set(a)) == 3 and "wrong" not in a  # 6 distinct correct, capped at 3
    assert [s.response for s in kept if s.prompt_id == "b"] == ["x"]
    assert keep_correct(samples, cap=3, seed=7) == kept
    assert len({tuple(s.response for s in keep_correct(samples, 3, seed)) for seed in range(10)}) > 1
    assert len(keep_correct(samples, cap=None, seed=0)) == 7


def test_rejection_sampling_pool_keeps_the_best_of_every_round():
    round1 = best_per_prompt([Scored("a", "a1", 0.2, 1), Scored("a", "a2", 0.5, 1), Scored("b", "b1", -0.4, 1)])
    assert {k: v.response for k, v in round1.items()} == {"a": "a2", "b": "b1"}
    round2 = best_per_prompt([Scored("a", "a3", 0.1, 2), Scored("b", "b2", 0.3, 2), Scored("c", "c1", 0.0, 2)])
    pool = merge_best(round1, round2)
    assert {k: (v.response, v.round) for k, v in pool.items()} == {"a": ("a2", 1), "b": ("b2", 2), "c": ("c1", 2)}
    assert best_per_prompt([Scored("a", "a1", -0.5)], min_reward=0.0) == {}


@pytest.fixture(scope="module")
def chat_base(tmp_path_factory, tiny_tokenizer_dir):
    from chatforge.tokenizer.load import load_tokenizer
    from tiny_models import make_tiny_model

    out = tmp_path_factory.mktemp("base")
    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    assert tokenizer.chat_template
    make_tiny_model(vocab_size=len(tokenizer), max_position_embeddings=512).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.parametrize("method", ["rest_em", "rejection_sampling"])
def test_rest_stage_runs_iterations_and_resumes(tmp_path, chat_base, method, capsys):
    from chatforge.cli import main
    from chatforge.world.write import write_world

    world = tmp_path / "world"
    write_world(world, size="tiny")
    args = [
        "rest", f"model={chat_base}", f"out={tmp_path / 'run'}", f"method={method}",
        f"data.sources={world / 'verifiable' / 'train.jsonl'}", f"data.val_sources={world / 'verifiable' / 'test.jsonl'}",
        "data.max_prompts=6", "iterations=2", "e_step.samples_per_prompt=3", "e_step.sampling.max_new_tokens=8",
        # An untrained model never answers correctly: the gold reward (in [-1, 1]) with threshold -1 keeps
        # every distinct sample, so the M-step has data.
        "e_step.scorer={kind: gold}", "e_step.threshold=-1", "e_step.cap_per_prompt=2", "m_step.max_steps=2",
        "m_step.micro_batch_size=4", "m_step.seq_len=256", "eval.n=2", "eval.ks=[1,2]", "eval.max_train_prompts=3",
        "eval.max_test_prompts=3", "eval.sampling.max_new_tokens=8",
    ]
    assert main(args) == 0
    summary = json.loads((tmp_path / "run" / "report" / "summary.json").read_text())
    rows = summary["iterations"]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    for row in rows[1:]:
        kept = [json.loads(line) for line in (tmp_path / "run" / f"iter_{row['iteration']}" / "kept.jsonl").read_text().splitlines()]
        assert len(kept) == row["e_step"]["kept"] > 0
        assert all(k["messages"][-1]["role"] == "assistant" for k in kept)
        per_prompt = {}
        for k in kept:
            per_prompt[k["id"]] = per_prompt.get(k["id"], 0) + 1
        if method == "rest_em":
            assert max(per_prompt.values()) <= 2
            # M-step from the base model every time.
            cfg = yaml.safe_load((tmp_path / "run" / f"iter_{row['iteration']}" / "sft" / "config.yaml").read_text())
            assert cfg["model"] == str(chat_base)
        else:
            assert max(per_prompt.values()) == 1 and len(per_prompt) == 6  # the pool: one best per prompt
        test = row["eval"]["test"]["all"]
        assert set(test) >= {"greedy", "pass@1", "pass@2", "maj@2"}
        # The gain over iteration 0 is paired over the same held-out prompts: its mean is the difference of means.
        gain = row["gain_over_base"]["pass@1"]
        assert gain["prompts"] == 3 == len(row["eval"]["test"]["per_prompt"])
        assert gain["gain"] == pytest.approx(test["pass@1"] - rows[0]["eval"]["test"]["all"]["pass@1"])
    assert (tmp_path / "run" / "report" / "rest.png").is_file()
    # final/ is the last policy (iteration 2's M-step), complete, its weights the same file (hard links)
    from chatforge.atomic_dir import check_complete

    final, last = tmp_path / "run" / "final", tmp_path / "run" / "iter_2" / "sft" / "final"
    assert summary["final"] == str(final) and summary["final_policy"] == str(last)
    check_complete(final)
    assert (final / "model.safetensors").read_bytes() == (last / "model.safetensors").read_bytes()
    assert (final / "model.safetensors").stat().st_ino == (last / "model.safetensors").stat().st_ino
    printed = capsys.readouterr().out
    assert "| iteration | kept | train pass@1 |" in printed

    # A rerun finds every iteration done and trains nothing.
    samples_before = (tmp_path / "run" / "iter_1" / "samples.jsonl").read_text()
    assert main(args) == 0
    assert "M-step:" not in capsys.readouterr().out
    assert (tmp_path / "run" / "iter_1" / "samples.jsonl").read_text() == samples_before


def test_rest_reports_bad_prompt_files(tmp_path, chat_base, capsys):
    from chatforge.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": [{"role": "assistant", "content": "hi"}]}\nnot json\n')
    assert main(["rest", f"model={chat_base}", f"out={tmp_path / 'run'}", f"data.sources={bad}", f"data.val_sources={bad}"]) == 2
    err = capsys.readouterr().err
    assert "no usable prompts" in err and "bad_field: 1" in err and "bad_json: 1" in err


class _AnswerPlus:
    """A fake policy: right on additions, wrong on every other prompt."""

    def sample(self, records, sampling, n):
        from chatforge.stages.rest import arithmetic_operator

        return [[f"The answer is {r['answer'] if arithmetic_operator(r) == '+' else 'no'}."] * n for r in records]


def test_tasks_keeps_one_task_and_arithmetic_is_scored_per_operator(tmp_path):
    from chatforge.errors import DataError
    from chatforge.run_dir import RejectLog
    from chatforge.stages.rest import RestEvalConfig, evaluate_policy, load_prompts
    from chatforge.world.write import write_world

    write_world(tmp_path / "world", size="tiny")
    path = str(tmp_path / "world" / "verifiable" / "test.jsonl")
    with RejectLog(tmp_path / "rejected.jsonl") as rejects:
        every = load_prompts(path, None, rejects)
        arithmetic = load_prompts(path, None, rejects, ["arithmetic"])
        first3 = load_prompts(path, 3, rejects, ["arithmetic"])
        with pytest.raises(DataError, match=r"no prompts of tasks \['division'\].*its tasks: arithmetic, count_letter"):
            load_prompts(path, None, rejects, ["division"])
    assert len(every) > len(arithmetic) > 3 and {r["task"] for r in arithmetic} == {"arithmetic"}
    assert arithmetic == [r for r in every if r["task"] == "arithmetic"] and first3 == arithmetic[:3]

    metrics = evaluate_policy(_AnswerPlus(), arithmetic, arithmetic, RestEvalConfig(n=2, ks=[1, 2]))["test"]
    by_op = metrics["by_operator"]
    assert set(by_op) <= {"+", "-", "*"} and "+" in by_op
    assert sum(m["prompts"] for m in by_op.values()) == len(arithmetic)
    assert by_op["+"]["pass@1"] == by_op["+"]["greedy"] == by_op["+"]["maj@2"] == 1.0
    assert all(m["pass@2"] == 0.0 for op, m in by_op.items() if op != "+")
    plus = by_op["+"]["prompts"] / len(arithmetic)
    assert metrics["all"]["pass@1"] == pytest.approx(plus) and metrics["by_group"]["arithmetic"]["pass@1"] == pytest.approx(plus)


def test_tasks_is_a_typed_config_key():
    from pydantic import ValidationError

    from chatforge.stages.rest import Config

    cfg = Config(model="m", data={"sources": "a", "val_sources": "b", "tasks": ["arithmetic"]})
    assert cfg.data.tasks == ["arithmetic"] and Config(model="m", data={"sources": "a", "val_sources": "b"}).data.tasks is None
    with pytest.raises(ValidationError):
        Config(model="m", data={"sources": "a", "val_sources": "b", "tasks": []})
