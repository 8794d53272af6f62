"""`chatforge eval`: the typed suite config, each task kind on tiny models, the side-by-side table and deltas."""

from __future__ import annotations

import json

import pytest
import torch

from chatforge.config.load import load_config
from chatforge.errors import ConfigError
from chatforge.evaluation.suite import SuiteConfig, format_markdown, format_table, run_suite
from tiny_models import make_tiny_model


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tiny_tokenizer):
    dirs = []
    for seed in (1, 2):
        out = tmp_path_factory.mktemp(f"model{seed}")
        make_tiny_model(vocab_size=384, seed=seed, tie_word_embeddings=False, max_position_embeddings=512).save_pretrained(out)
        tiny_tokenizer.save_pretrained(out)
        dirs.append(str(out))
    return dirs


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "ceval" / "dev").mkdir(parents=True)
    (root / "ceval" / "test").mkdir(parents=True)
    header = "id,question,A,B,C,D,answer\n"
    for subject in ("cats", "dogs"):
        (root / "ceval" / "dev" / f"{subject}_dev.csv").write_text(header + "0,Pick one?,red,blue,green,grey,B\n")
        rows = "".join(f"{i},Is {subject} {i} big?,yes,no,maybe,never,{'ABCD'[i % 4]}\n" for i in range(6))
        (root / "ceval" / "test" / f"{subject}_test.csv").write_text(header + rows)
    (root / "text.jsonl").write_text("".join(json.dumps({"text": f"The cat sat on mat {i}."}) + "\n" for i in range(5)))
    gen = [
        {"prompt": [{"role": "user", "content": "Say x."}], "answers": ["x"], "task": "echo"},
        {"prompt": "Say y.", "answers": ["y"], "task": "echo"},
        {"messages": [{"role": "user", "content": "Say z."}, {"role": "assistant", "content": "z"}], "answers": ["z"], "task": "other"},
    ]
    (root / "gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gen) + "not json\n")
    pairs = [
        {"prompt": [{"role": "user", "content": f"Question {i}?"}], "chosen": f"Good answer {i}.", "rejected": "bad",
         "category": "helpfulness" if i % 2 else "safety"}
        for i in range(4)
    ]
    (root / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return root


def always_true(record, response):
    return True


def test_unknown_keys_and_kinds_are_errors(data):
    with pytest.raises(ConfigError, match="shotz"):
        load_config(SuiteConfig, overrides={"models": ["m"], "tasks": [{"kind": "multiple_choice", "path": "p", "shotz": 2}]})
    with pytest.raises(ConfigError, match="kind"):
        load_config(SuiteConfig, overrides={"models": ["m"], "tasks": [{"kind": "multiple_choise", "path": "p"}]})
    with pytest.raises(ConfigError, match="baseline"):
        load_config(SuiteConfig, overrides={"models": ["a/m", "b/m"], "baseline": "c", "tasks": [{"kind": "lm", "data": [{"path": "x"}]}]})
    with pytest.raises(ConfigError, match="checker"):
        load_config(SuiteConfig, overrides={"models": ["m"], "tasks": [{"kind": "generation", "path": "p", "checker": "regex"}]})


def test_suite_side_by_side_with_deltas(model_dirs, data, tmp_path):
    out = tmp_path / "eval.json"
    cfg = SuiteConfig(
        models=model_dirs, labels=["one", "two"], baseline="one", out=str(out), plot=True,
        tasks=[
            {"kind": "lm", "data": [{"path": str(data / "text.jsonl")}]},
            {"kind": "multiple_choice", "path": str(data / "ceval"), "shots": 1, "method": "letter"},
            {"kind": "multiple_choice", "name": "cloze", "path": str(data / "ceval"), "shots": 1, "method": "option", "subjects": ["cats"]},
            {"kind": "generation", "path": str(data / "gen.jsonl"), "checker": "answers", "n": 4, "ks": [1, 2, 4],
             "max_new_tokens": 4, "sampling": {"temperature": 1.0, "max_new_tokens": 4, "seed": 0}},
            {"kind": "generation", "name": "fn", "path": str(data / "gen.jsonl"), "checker": "function:test_eval_suite:always_true",
             "max_new_tokens": 2},
        ],
    )
    report = run_suite(cfg, progress=lambda line: None)
    saved = json.loads(out.read_text())
    assert saved["baseline"] == "one" and list(saved["results"]) == ["one", "two"]
    one, two = report["results"]["one"], report["results"]["two"]
    assert set(one) == {"lm", "multiple_choice", "cloze", "generation", "fn"}
    assert one["lm"]["metrics"]["bpb"] > 0 and one["lm"]["details"]["documents"] == 5
    mc = one["multiple_choice"]
    assert mc["details"]["total"] == 12 and set(mc["details"]["per_subject"]) == {"cats", "dogs"}
    assert {"accuracy", "p_correct", "accuracy/cats", "accuracy/dogs"} <= set(mc["metrics"])
    assert "accuracy_norm" in one["cloze"]["metrics"] and one["cloze"]["details"]["total"] == 6
    gen = one["generation"]["metrics"]
    assert {"exact_match", "pass@1", "pass@2", "pass@4", "maj@4"} <= set(gen)
    assert gen["pass@1"] <= gen["pass@2"] <= gen["pass@4"]
    assert one["fn"]["metrics"] == {"exact_match": 1.0}
    # The line that is not JSON was counted, once per model and task reading the file.
    assert saved["rejected"] == {"bad_json": 4}
    # Deltas against the baseline model.
    delta = report["deltas"]["two"]["lm"]["bpb"]
    assert delta == pytest.approx(two["lm"]["metrics"]["bpb"] - one["lm"]["metrics"]["bpb"])
    table = format_table(report)
    assert "Δ two" in table.splitlines()[0] and "lm / bpb" in table and f"{delta:+.4f}" in table
    assert format_markdown(report).startswith("| task / metric | one | two | Δ two |")
    assert out.with_suffix(".png").is_file()


def test_reward_accuracy_dpo_implicit_reward(model_dirs, data, tmp_path):
    from chatforge.dpo.data import PairSourceConfig, encode_pairs, read_pairs
    from chatforge.dpo.objective import reference_logps
    from chatforge.models.build import load_pretrained
    from chatforge.run_dir import RejectLog
    from chatforge.tokenizer.load import load_tokenizer

    policy, reference = model_dirs
    task = {"kind": "reward_accuracy", "path": str(data / "pairs.jsonl"), "model_kind": "dpo", "reference": reference, "beta": 0.5}
    self_ref = {**task, "name": "self", "reference": policy}
    cfg = SuiteConfig(models=[policy], labels=["p"], out=str(tmp_path / "e.json"), plot=False, tasks=[task, self_ref])
    result = run_suite(cfg, progress=lambda line: None)["results"]["p"]
    # Against itself every implicit reward is 0: every pair a tie, which counts as wrong.
    assert result["self"]["metrics"]["accuracy"] == 0.0 and result["self"]["details"]["ties"] == 4
    # Against another model: beta * (log pi - log pi_ref), recomputed by hand.
    tok = load_tokenizer(policy)
    pairs = encode_pairs(tok, read_pairs([PairSourceConfig(path=str(data / "pairs.jsonl"))], RejectLog(None)), RejectLog(None), 512)
    pc, pr = reference_logps(load_pretrained(policy), pairs, tok.pad_token_id, 4)
    rc, rr = reference_logps(load_pretrained(reference), pairs, tok.pad_token_id, 4)
    expected = (0.5 * (pc - rc) > 0.5 * (pr - rr)).float().mean().item()
    metrics = result["reward_accuracy"]["metrics"]
    assert metrics["accuracy"] == pytest.approx(expected)
    assert metrics["margin"] == pytest.approx((0.5 * ((pc - rc) - (pr - rr))).mean().item(), abs=1e-5)
    assert metrics["logp_accuracy"] == pytest.approx((pc > pr).float().mean().item())
    assert {"accuracy/helpfulness", "accuracy/safety"} <= set(metrics)


def test_reward_accuracy_reward_model(tmp_path, tiny_tokenizer, data):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=384, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, num_labels=1, pad_token_id=tiny_tokenizer.pad_token_id)
    rm_dir = tmp_path / "rm"
    LlamaForSequenceClassification(config).save_pretrained(rm_dir)
    tiny_tokenizer.save_pretrained(rm_dir)
    cfg = SuiteConfig(models=[str(rm_dir)], out=str(tmp_path / "e.json"), plot=False,
                      tasks=[{"kind": "reward_accuracy", "path": str(data / "pairs.jsonl")}])
    result = run_suite(cfg, progress=lambda line: None)["results"][cfg.model_labels()[0]]
    details = result["reward_accuracy"]["details"]
    assert details["pairs"] == 4 and details["model_kind"] == "reward_model"
    assert 0.0 <= result["reward_accuracy"]["metrics"]["accuracy"] <= 1.0


def test_read_jsonl_skips_bad_lines_by_reason_with_file_and_line(tmp_path):
    from chatforge.errors import DataError
    from chatforge.evaluation.tasks.base import read_jsonl
    from chatforge.run_dir import RejectLog

    path = tmp_path / "gen.jsonl"
    path.write_bytes(b'{"q": 1}\n\xff\n{bad\n[1, 2]\n\n{"q": 2}\n{"q": 3}\n')
    with RejectLog(tmp_path / "rejected.jsonl") as rejects:
        records = read_jsonl(path, rejects, limit=2)
    assert records == [{"q": 1, "_where": f"{path}:1"}, {"q": 2, "_where": f"{path}:6"}]
    rejected = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert [(r["where"], r["reason"]) for r in rejected] == [("line 2", "not_utf8"), ("line 3", "bad_json"), ("line 4", "not_an_object")]
    path.write_text("[1]\n")
    with pytest.raises(DataError, match=r"gen.jsonl: no usable records \(1 records skipped or altered: not_an_object: 1\)"):
        read_jsonl(path, RejectLog(None))


def test_missing_model_dir_is_one_clear_error(data, tmp_path):
    cfg = SuiteConfig(models=[str(tmp_path / "nope")], out=str(tmp_path / "e.json"), plot=False,
                      tasks=[{"kind": "lm", "data": [{"path": str(data / "text.jsonl")}]}])
    with pytest.raises(ConfigError, match="model directory not found"):
        run_suite(cfg, progress=lambda line: None)


def test_a_generation_record_that_asks_nothing_is_rejected_with_its_line(model_dirs, tmp_path):
    """A record without `prompt` or `messages` is counted in rejected.jsonl with its line and the task
    runs on the others (it stopped the whole eval with 'record ?: needs a prompt', naming no file)."""
    path = tmp_path / "gen.jsonl"
    path.write_text(json.dumps({"prompt": "Say x.", "answers": ["x"]}) + "\n" + json.dumps({"question": "Say y.", "answers": ["y"]})
                    + "\n" + json.dumps({"prompt": "Say z.", "answers": ["z"]}) + "\n")
    out = tmp_path / "eval.json"
    cfg = SuiteConfig(models=model_dirs[:1], out=str(out), plot=False,
                      tasks=[{"kind": "generation", "path": str(path), "checker": "answers", "max_new_tokens": 2}])
    result = run_suite(cfg, progress=lambda line: None)
    details = next(iter(result["results"].values()))["generation"]["details"]
    assert details["prompts"] == 2 and [e["where"] for e in details["examples"]] == [f"{path}:1", f"{path}:3"]
    assert json.loads(out.read_text())["rejected"] == {"bad_field": 1}
    rejected = [json.loads(line) for line in out.with_suffix(".rejected.jsonl").read_text().splitlines()]
    assert [(r["where"], r["reason"]) for r in rejected] == [("line 2", "bad_field")]
