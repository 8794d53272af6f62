"""Best-of-N: the estimator against brute force over every N-subset, the KL formula, the stage end to end."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest

from chatforge.cli import main
from chatforge.scoring.best_of_n import (
    best_of_n_kl,
    expected_best_of_n,
    n_grid,
    selection_probabilities,
)


def brute_force(proxy: list[float], values: list[float], n: int) -> float:
    """Mean over all N-subsets of the value of the subset's best; tied best share equally (uniform pick)."""
    totals = []
    for subset in itertools.combinations(range(len(proxy)), n):
        top = max(proxy[j] for j in subset)
        best = [j for j in subset if proxy[j] == top]
        totals.append(sum(values[j] for j in best) / len(best))
    return sum(totals) / len(totals)


@pytest.mark.parametrize("seed", range(12))
def test_estimator_equals_brute_force(seed):
    rng = random.Random(seed)
    m = rng.randint(1, 8)
    # every other case draws proxies from 3 levels, so ties are common
    proxy = [rng.choice([0.0, 0.5, 1.0]) if seed % 2 else rng.gauss(0, 1) for _ in range(m)]
    values = [rng.uniform(-1, 1) for _ in range(m)]
    for n in range(1, m + 1):
        assert expected_best_of_n(proxy, values, n) == pytest.approx(brute_force(proxy, values, n), abs=1e-12)
        assert sum(selection_probabilities(proxy, n)) == pytest.approx(1.0)


def test_estimator_hand_computed():
    """M=4, proxy order b > a > d > c. N=2: P(rank i best) = C(4-i, 1)/C(4, 2) = 3/6, 2/6, 1/6, 0."""
    proxy, gold = [0.3, 0.9, 0.1, 0.2], [10.0, 20.0, 30.0, 40.0]
    assert selection_probabilities(proxy, 2) == pytest.approx([2 / 6, 3 / 6, 0.0, 1 / 6])
    assert expected_best_of_n(proxy, gold, 2) == pytest.approx((3 * 20 + 2 * 10 + 1 * 40) / 6)
    assert expected_best_of_n(proxy, gold, 1) == pytest.approx(25.0)  # N=1: the plain mean
    assert expected_best_of_n(proxy, gold, 4) == pytest.approx(20.0)  # N=M: the argmax
    # a tie of the two best: they share the 3/6 + 2/6 of ranks 1 and 2 equally
    assert selection_probabilities([0.9, 0.9, 0.1, 0.2], 2) == pytest.approx([5 / 12, 5 / 12, 0.0, 1 / 6])
    with pytest.raises(ValueError):
        selection_probabilities(proxy, 5)


def test_kl_formula_and_grid():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)  # 0.1931
    assert best_of_n_kl(16) == pytest.approx(math.log(16) - 15 / 16)  # 1.8351
    kls = [best_of_n_kl(n) for n in range(1, 65)]
    assert all(b > a for a, b in zip(kls, kls[1:]))
    assert n_grid(16) == [1, 2, 4, 8, 16]
    assert n_grid(12) == [1, 2, 4, 8, 12]
    assert n_grid(1) == [1]


def test_table_means_over_prompts():
    from chatforge.stages.bon import best_of_n_table

    prompts = [
        {"proxy": [0.3, 0.9], "gold": [1.0, 0.0], "check": [1.0, 0.0]},
        {"proxy": [0.5, 0.5], "gold": [0.2, 0.4], "check": None},
    ]
    rows = best_of_n_table(prompts, [1, 2])
    assert rows[0]["gold"] == pytest.approx((0.5 + 0.3) / 2) and rows[0]["accuracy"] == pytest.approx(0.5)
    assert rows[1]["gold"] == pytest.approx((0.0 + 0.3) / 2) and rows[1]["accuracy"] == 0.0
    assert rows[1]["proxy"] == pytest.approx((0.9 + 0.5) / 2) and rows[1]["accuracy_prompts"] == 1


def test_read_prompts_rejects_each_bad_line_by_reason_and_line(tmp_path):
    from chatforge.errors import DataError
    from chatforge.run_dir import RejectLog
    from chatforge.stages.bon import read_prompts

    prompts = tmp_path / "prompts.jsonl"
    user = {"role": "user", "content": "Hi"}
    lines = [
        b'{"id": "a", "prompt": [' + json.dumps(user).encode() + b"]}",
        b"\xff\xfe not text",
        b"{not json",
        b"",
        b'["a", "list"]',
        b'{"id": "no-prompt"}',
        b'{"messages": [' + json.dumps(user).encode() + b', {"role": "assistant", "content": "Hello"}], "task": "t"}',
    ]
    prompts.write_bytes(b"\n".join(lines) + b"\n")
    with RejectLog(tmp_path / "rejected.jsonl") as rejects:
        records = read_prompts(prompts, None, rejects)
    assert [r["id"] for r in records] == ["a", "prompts:7"]
    assert records[1]["prompt"] == [user] and "messages" not in records[1] and records[1]["_where"] == "line 7"
    rejected = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert [(r["where"], r["reason"]) for r in rejected] == [
        ("line 2", "not_utf8"), ("line 3", "bad_json"), ("line 5", "not_an_object"), ("line 6", "bad_field"),
    ]
    assert all(r["source"] == str(prompts) for r in rejected)
    with pytest.raises(DataError, match="not found"):
        read_prompts(tmp_path / "missing.jsonl", None, RejectLog(None))


def _reward_model_paths(tree) -> list[str]:
    if isinstance(tree, dict):
        found = [tree["path"]] if tree.get("kind") == "reward_model" else []
        return found + [p for value in tree.values() for p in _reward_model_paths(value)]
    return []


def test_shipped_bon_examples_load_and_score_with_the_documented_reward_models():
    """Every examples/bon YAML validates, and each reward model it scores with is the final/ of a run
    that docs/reward_models.md trains (`chatforge rm ... out=runs/rm/NAME`)."""
    import re
    from pathlib import Path

    from chatforge.config.load import load_config
    from chatforge.stages.bon import Config

    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "examples" / "bon").glob("**/*.yaml"))
    assert len(files) >= 2
    trained = set(re.findall(r"chatforge rm .*?out=(runs/rm/[\w.-]+)", (root / "docs" / "reward_models.md").read_text()))
    assert {"runs/rm/world_bt", "runs/rm/world_kwise"} <= trained
    used = []
    for file in files:
        cfg = load_config(Config, file)
        for path in _reward_model_paths(cfg.model_dump()):
            assert path.endswith("/final") and path.removesuffix("/final") in trained, f"{file.name}: {path}"
            used.append(path)
    assert used  # safety_gate.yaml's helpfulness component


def _bon(out, base, prompts, *extra):
    model = [f"model={base}"] if base is not None else []  # none when rescoring samples=...
    args = ["bon", *model, f"data.sources={prompts}", f"out={out}", "n_max=8", "data.max_prompts=4",
            "sampling.max_new_tokens=12", "device=cpu", *extra]
    assert main(args) == 0
    return json.loads((out / "bon.json").read_text())


@pytest.fixture()
def length_proxy(tmp_path, monkeypatch):
    (tmp_path / "bon_length_proxy.py").write_text("def words(prompt, response):\n    return len(response.split())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "bon_length_proxy:words"
    import sys

    sys.modules.pop("bon_length_proxy", None)


def test_stage_end_to_end_on_verifiable_prompts(tmp_path, base_dir, world, length_proxy):
    prompts = tmp_path / "prompts.jsonl"
    lines = (world / "verifiable" / "test.jsonl").read_text().splitlines()[:4]
    prompts.write_text("\n".join(["not json", '{"id": "no-prompt"}', *lines]) + "\n")
    report = _bon(tmp_path / "run", base_dir, prompts, "scorer.kind=function", f"scorer.path={length_proxy}")
    rows = report["best_of_n"]
    assert [r["n"] for r in rows] == [1, 2, 4, 8]
    for r in rows:
        assert set(r) >= {"n", "kl", "gold", "proxy", "accuracy"}
        assert r["kl"] == pytest.approx(math.log(r["n"]) - (r["n"] - 1) / r["n"])
        assert -1.0 <= r["gold"] <= 1.0 and 0.0 <= r["accuracy"] <= 1.0 and r["accuracy_prompts"] == 4
    proxies = [r["proxy"] for r in rows]
    assert all(b >= a - 1e-12 for a, b in zip(proxies, proxies[1:]))  # the chosen proxy never drops with N
    assert proxies[-1] > proxies[0]  # the tiny model's samples differ in length
    assert report["prompts"] == 4 and report["rejected"] == {"bad_json": 1, "bad_field": 1}
    run = tmp_path / "run"
    assert (run / "report" / "bon.png").stat().st_size > 1000
    rejected = [json.loads(line) for line in (run / "rejected.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejected] == ["bad_json", "bad_field"] and rejected[0]["where"] == "line 1"
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all(len(s["responses"]) == len(s["gold"]) == len(s["check"]) == 8 for s in samples)
    for s in samples:
        assert s["proxy"] == [len(r.split()) for r in s["responses"]]
    for r in rows:  # the table is the per-prompt brute-force mean of the written samples
        for key, values in (("gold", "gold"), ("proxy", "proxy"), ("accuracy", "check")):
            expected = sum(brute_force(s["proxy"], s[values], r["n"]) for s in samples) / 4
            assert r[key] == pytest.approx(expected)
    best = [json.loads(line) for line in (run / "best.jsonl").read_text().splitlines()]
    assert len(best) == 4
    for b, s in zip(best, samples):
        assert b["messages"][-1]["role"] == "assistant" and b["messages"][-2]["role"] == "user"
        assert b["proxy"] == max(s["proxy"]) and b["id"] == s["id"] and "answer" in b
        assert b["messages"][-1]["content"] == s["responses"][s["proxy"].index(max(s["proxy"]))]


def test_stage_check_proxy_accuracy_and_rescoring(tmp_path, base_dir, world):
    prompts = world / "verifiable" / "test.jsonl"
    first = _bon(tmp_path / "run", base_dir, prompts, "n_max=4")
    samples = tmp_path / "run" / "samples.jsonl"
    rescored = _bon(tmp_path / "check", None, prompts, "scorer.kind=check", "n_max=2", f"samples={samples}")
    assert rescored["prompts"] == first["prompts"] == 4
    for r in rescored["best_of_n"]:
        assert r["accuracy"] == pytest.approx(r["proxy"])  # the proxy is the checker itself
    # rescoring the same responses with the same proxy reproduces the sampling run's numbers
    same = _bon(tmp_path / "same", None, prompts, "n_max=4", f"samples={samples}")
    assert same["best_of_n"] == first["best_of_n"]
    written = [json.loads(line) for line in samples.read_text().splitlines()]
    again = [json.loads(line) for line in (tmp_path / "same" / "samples.jsonl").read_text().splitlines()]
    assert again == written
    assert main(["bon", f"data.sources={prompts}", f"out={tmp_path / 'x'}", "n_max=8", f"samples={samples}"]) == 2


def test_stage_gold_proxy_on_instructions_is_monotone_and_reproducible(tmp_path, base_dir, world):
    prompts = world / "instructions" / "test.jsonl"  # conversations: the reference answer is dropped
    first = _bon(tmp_path / "a", base_dir, prompts, "n_max=4")
    again = _bon(tmp_path / "b", base_dir, prompts, "n_max=4")
    assert first["best_of_n"] == again["best_of_n"]  # seeded sampling
    rows = first["best_of_n"]
    assert [r["n"] for r in rows] == [1, 2, 4]
    assert all(r["gold"] == r["proxy"] for r in rows)  # proxy and gold are both the world's gold reward
    assert all(b["proxy"] >= a["proxy"] - 1e-12 for a, b in zip(rows, rows[1:]))
    assert all(r["accuracy"] is None for r in rows if r["accuracy_prompts"] == 0)


def test_stage_config_errors(tmp_path, base_dir, capsys):
    assert main(["bon", "data.sources=x.jsonl"]) == 2
    assert "model is required" in capsys.readouterr().err
    assert main(["bon", f"model={base_dir}", "data.sources=x.jsonl", "n_max=4", "sampling.n=2"]) == 2
    assert "sampling.n=2" in capsys.readouterr().err
    assert main(["bon", f"model={base_dir}", "data.sources=x.jsonl", "scorer.kind=function"]) == 2
    assert "scorer.path" in capsys.readouterr().err
    assert main(["bon", f"model={base_dir}", f"data.sources={tmp_path / 'missing.jsonl'}", f"out={tmp_path / 'r'}"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["bon", "model=m", "data.sources=p", "sampling.temperature=0.7", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "temperature: 0.7" in printed and "max_new_tokens: 128" in printed and "seed: 0" in printed
    assert main(["bon", "--help"]) == 0
    assert "n_max" in capsys.readouterr().out


def test_choose_pair_by_hand():
    """Best vs worst by score, the first of each tie; no pair below the margin or for one text."""
    from chatforge.stages.bon import choose_pair

    texts = ["a", "b", "c", "d", "e"]
    assert choose_pair([0.4, 1.0, 0.2, 1.0, 0.2], texts, 0.1) == (1, 2)  # ties: the first best, the first worst
    assert choose_pair([0.4, 1.0, 0.2, 1.0, 0.2], texts, 0.8) == (1, 2)  # gap 0.8 reaches the margin
    assert choose_pair([0.4, 1.0, 0.2, 1.0, 0.2], texts, 0.81) == "below_margin"
    assert choose_pair([0.5, 0.4], ["x", "y"], 0.1) == (0, 1)  # 0.5 - 0.4 = 0.0999...: rounding, not a gap
    assert choose_pair([0.45, 0.4], ["x", "y"], 0.1) == "below_margin"
    assert choose_pair([0.4, 0.4, 0.4], ["x", "y", "z"], 0.1) == "below_margin"  # every score tied
    assert choose_pair([0.7], ["x"], 0.1) == "below_margin"  # one sample
    assert choose_pair([0.9, 0.1], ["same", "same"], 0.1) == "identical_responses"  # a scorer not of the text


def test_pair_records_replace_the_fields_of_an_input_pair():
    from chatforge.dpo.data import to_pair
    from chatforge.stages.bon import pair_records

    prompt = [{"role": "user", "content": "2 + 2?"}]
    pair_record = {"id": "p1", "task": "arithmetic", "category": "helpfulness", "kind": "wrong", "prompt": prompt,
                   "chosen": "4", "rejected": "5", "chosen_reward": 1.0, "rejected_reward": 0.4, "_where": "line 1"}
    plain = {"id": "q1", "task": "t", "prompt": prompt, "_where": "line 2"}
    results = [
        {"record": pair_record, "responses": ["The answer is 5.", "The answer is 4.", "4 4 4 4"],
         "proxy": [0.4, 1.0, 0.2], "gold": [0.4, 1.0, 0.2]},
        {"record": plain, "responses": ["x", "y"], "proxy": [0.3, 0.35], "gold": [0.0, 0.0]},
        {"record": plain, "responses": ["x", "y"], "proxy": [0.3, 0.0], "gold": [0.5, -1.0]},
    ]
    pairs, skipped = pair_records(results, 0.1)
    assert skipped == {"below_margin": 1, "identical_responses": 0}
    assert pairs[0] == {"id": "p1", "task": "arithmetic", "category": "helpfulness", "prompt": prompt,
                        "chosen": "The answer is 4.", "rejected": "4 4 4 4", "chosen_score": 1.0,
                        "rejected_score": 0.2, "chosen_gold": 1.0, "rejected_gold": 0.2}
    assert pairs[1]["chosen"] == "x" and pairs[1]["rejected_gold"] == -1.0 and pairs[1]["task"] == "t"
    loaded = to_pair(pairs[0])  # the DPO reader's layout
    assert loaded.prompt == prompt and loaded.chosen == "The answer is 4." and loaded.extra["chosen_score"] == 1.0


def test_stage_writes_on_policy_pairs_from_preference_prompts(tmp_path, base_dir, world, length_proxy):
    """The world's preference pairs as prompts (their `prompt`), pairs.jsonl by a length proxy, read
    back by chatforge dpo's data loader."""
    from chatforge.dpo.data import PairSourceConfig, read_pairs
    from chatforge.run_dir import RejectLog

    prompts = world / "preferences" / "pairs_train.jsonl"
    report = _bon(tmp_path / "run", base_dir, prompts, "n_max=4", "data.max_prompts=6", "scorer.kind=function",
                  f"scorer.path={length_proxy}", "write_pairs.min_margin=2")
    run = tmp_path / "run"
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    written = [json.loads(line) for line in (run / "pairs.jsonl").read_text().splitlines()]
    source = {r["id"]: r for r in map(json.loads, prompts.read_text().splitlines()[:6])}
    assert len(samples) + report["rejected"].get("prompt_too_long", 0) == 6 and len(samples) >= 4
    expected = []
    for s in samples:
        best, worst = max(s["proxy"]), min(s["proxy"])
        if best - worst >= 2:
            expected.append((s["id"], s["responses"][s["proxy"].index(best)], s["responses"][s["proxy"].index(worst)]))
    assert [(p["id"], p["chosen"], p["rejected"]) for p in written] == expected
    assert report["pairs"] == {"min_margin": 2.0, "written": len(expected),
                               "skipped": {"below_margin": len(samples) - len(expected), "identical_responses": 0}}
    assert 0 < len(expected) < len(samples)  # the tiny model's samples differ in length on some prompts, not all
    for p in written:
        record = source[p["id"]]
        assert p["prompt"] == record["prompt"] and p["task"] == record["task"] and "kind" not in p
        assert "chosen_reward" not in p and p["category"] == record["category"]
        assert p["chosen_score"] == len(p["chosen"].split()) and -1.0 <= p["rejected_gold"] <= 1.0
    with RejectLog(tmp_path / "rejected.jsonl") as rejects:
        loaded = list(read_pairs([PairSourceConfig(path=str(run / "pairs.jsonl"))], rejects))
    assert rejects.total == 0 and [p.chosen for p in loaded] == [e[1] for e in expected]
    plain = _bon(tmp_path / "plain", None, prompts, "n_max=4", "data.max_prompts=6", f"samples={run / 'samples.jsonl'}")
    assert plain["pairs"] is None and not (tmp_path / "plain" / "pairs.jsonl").exists()  # off by default
