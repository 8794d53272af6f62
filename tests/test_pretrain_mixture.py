"""`chatforge pretrain` with a staged mixture, SFT chat records in the anneal stage, replay and domains."""

from __future__ import annotations

import json
import shutil

import pytest

from chatforge.cli import main

TINY_MODEL = ["model.preset=llama-1m", "model.config_overrides={hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2}"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from chatforge.world import write_world

    root = tmp_path_factory.mktemp("world")
    write_world(root, size="tiny")
    return root


def test_staged_mixture_with_sft_anneal_replay_and_forgetting_table(tmp_path, world, tiny_tokenizer_dir, capsys):
    chat = tmp_path / "sft.jsonl"
    shutil.copy(world / "instructions" / "train.jsonl", chat)
    with chat.open("a") as fh:
        fh.write('{"messages": [{"role": "narrator", "content": "x"}]}\n')  # a bad record: reported, not trained on
    config = tmp_path / "cfg.yaml"
    config.write_text(
        f"""
out: {tmp_path / 'run'}
tokenizer: {tiny_tokenizer_dir}
data:
  sources:
    - {{path: {world / 'pretrain/world_a_train.jsonl'}, name: a}}
    - {{path: {chat}, name: sft, content: chat}}
  replay: {{sources: [{{path: {world / 'pretrain/world_b_train.jsonl'}, name: b_old}}], fraction: 0.2}}
  stages:
    - {{name: stable, weights: {{a: 1}}}}
    - {{name: anneal, start_phase: decay, weights: {{a: 1, sft: 1}}}}
  seq_len: 64
  val_fraction: 0.1
  eval_sources: [{{path: {world / 'pretrain/world_b_valid.jsonl'}, name: heldout_b}}]
  cache_dir: {tmp_path / 'cache'}
train: {{max_steps: 10, micro_batch_size: 4, grad_accum_steps: 2, progress: false, save_every: 5, eval_at_start: true}}
schedule: {{kind: wsd, warmup_steps: 2, decay_steps: 4}}
domains:
  - name: world_a
    texts: {{path: {world / 'pretrain/world_a_valid.jsonl'}}}
    knowledge: {{path: {world / 'ceval'}, subject: world_a, shots: 1, max_questions: 12}}
"""
    )
    assert main(["pretrain", str(config), *TINY_MODEL]) == 0
    printed = capsys.readouterr().out
    run = tmp_path / "run"
    summary = json.loads((run / "report" / "summary.json").read_text())

    mixture = summary["mixture"]
    assert mixture["stage_starts"] == {"stable": 0, "anneal": 6}  # wsd: decay = last 4 of 10 steps
    assert mixture["planned"]["stable"] == {"a": 0.8, "sft": 0.0, "b_old": 0.2}
    assert mixture["planned"]["anneal"] == {"a": 0.4, "sft": 0.4, "b_old": 0.2}
    assert mixture["observed_rows"]["stable"]["sft"] == 0 and mixture["observed_rows"]["anneal"]["sft"] > 0
    assert "from step 6: anneal: a 40.0%, sft 40.0%, b_old 20.0%" in printed

    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    shares = {m["step"]: m["share/sft"] for m in metrics if "share/sft" in m}
    assert all(shares[s] == 0 for s in range(1, 7)) and sum(shares[s] for s in range(7, 11)) > 0
    for m in (m for m in metrics if "loss" in m):  # the step loss is the token-weighted mean of the sources'
        parts = sum(m[f"share/{n}"] * m[f"loss/{n}"] for n in ("a", "sft", "b_old") if f"loss/{n}" in m)
        assert parts == pytest.approx(m["loss"], rel=1e-6)
    evals = next(m for m in metrics if "val/loss" in m)
    assert evals["step"] == 0  # eval_at_start: the baseline before any update
    assert {"val/a/loss", "val/sft/loss", "val/b_old/loss", "val/heldout_b/loss"} <= set(evals)

    domain = summary["domains"]["world_a"]
    assert set(domain) == {"before", "after", "delta"}
    assert domain["delta"]["bpb"] == pytest.approx(domain["after"]["bpb"] - domain["before"]["bpb"])
    assert 0 <= domain["after"]["knowledge_acc"] <= 1
    assert "world_a" in printed and "bpb before" in printed

    rejected = [json.loads(line) for line in (run / "rejected.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejected] == ["bad_messages"] and rejected[0]["where"].startswith("line ")
    assert summary["rejected"] == {"bad_messages": 1}


def test_chat_records_are_rendered_with_the_chat_template(tmp_path, tiny_tokenizer):
    from chatforge.data.corpus import SourceConfig
    from chatforge.data.token_cache import build_token_cache
    from chatforge.run_dir import RejectLog

    path = tmp_path / "chat.jsonl"
    messages = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]
    path.write_text(json.dumps({"messages": messages}) + "\n")
    cache = build_token_cache(
        [SourceConfig(path=str(path), content="chat")], tiny_tokenizer, tmp_path / "c", RejectLog(None), log=lambda *_: None
    )
    ids = cache.tokens("train").tolist()
    rendered = tiny_tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered.startswith("<|im_start|>user")
    body = ids[1:-1] if tiny_tokenizer.bos_token_id is not None and ids[0] == tiny_tokenizer.bos_token_id else ids[:-1]
    assert body == tiny_tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert ids[-1] == tiny_tokenizer.eos_token_id


def test_continued_pretraining_from_a_run_with_a_typo_in_a_stage_fails_before_tokenizing(tmp_path, tiny_tokenizer_dir, capsys):
    code = main([
        "pretrain", f"out={tmp_path / 'r'}", f"tokenizer={tiny_tokenizer_dir}", *TINY_MODEL,
        "data.sources=[{path: builtin:pydoc, name: docs}]", "data.stages=[{name: s, weights: {doc: 1}}]",
    ])
    assert code == 2
    assert "did you mean 'docs'" in capsys.readouterr().err


def test_chat_templates_that_add_bos_do_not_get_a_second_one(tmp_path):
    from chatforge.data.corpus import SourceConfig
    from chatforge.data.token_cache import build_token_cache
    from chatforge.run_dir import RejectLog
    from chatforge.tokenizer.load import load_tokenizer
    from chatforge.tokenizer.train import TokenizerConfig, save_tokenizer, train_tokenizer

    out = tmp_path / "tok"
    save_tokenizer(train_tokenizer(TokenizerConfig(vocab_size=300, max_documents=20, add_bos=True, out=str(out)), RejectLog(None)), out)
    tokenizer = load_tokenizer(out)
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}) + "\n")
    cache = build_token_cache([SourceConfig(path=str(path), content="chat")], tokenizer, tmp_path / "c", RejectLog(None), log=print)
    ids = cache.tokens("train").tolist()
    assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[-1] == tokenizer.eos_token_id


def test_language_modelling_reports_each_sources_own_loss():
    import torch

    from chatforge.losses.lm import token_nll_sum
    from chatforge.stages.pretrain import LanguageModelling
    from tiny_models import make_tiny_model

    model = make_tiny_model()
    torch.manual_seed(0)
    batch = {"input_ids": torch.randint(4, 300, (3, 10)), "labels": torch.randint(4, 300, (3, 10))}
    batch["labels"][1, :4] = -100
    batch["source"] = torch.tensor([0, 1, 0])
    out = LanguageModelling(["x", "y"])(model, batch)
    logits = model(input_ids=batch["input_ids"]).logits
    total, count = token_nll_sum(logits, batch["labels"])
    x_sum, x_count = token_nll_sum(logits[[0, 2]], batch["labels"][[0, 2]])
    assert out.loss_sum.item() == pytest.approx(total.item(), rel=1e-5) and int(out.count) == int(count) == 26
    num, den = out.ratios["loss/x"]
    assert num.item() == pytest.approx(x_sum.item(), rel=1e-5) and int(den) == int(x_count) == 20
    assert int(out.sums["share/y"]) == 6
