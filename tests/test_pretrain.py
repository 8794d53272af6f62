"""End to end: `chatforge pretrain` and `chatforge eval-lm` on a tiny preset, plus the LM loss formulas."""

from __future__ import annotations

import json
import math

import pytest
import torch

from chatforge.cli import main
from chatforge.losses.lm import bits_per_byte, perplexity, token_nll_sum
from chatforge.models.logprobs import score_texts, text_windows
from tiny_models import make_tiny_model


def test_token_nll_sum_by_hand():
    """logits row [0, ln 3] -> p(1) = 3/4, p(0) = 1/4; labels [1, 0, ignored]: NLL = -ln(3/4) - ln(1/4)."""
    logits = torch.tensor([[[0.0, math.log(3)], [0.0, math.log(3)], [5.0, -5.0]]])
    loss_sum, n = token_nll_sum(logits, torch.tensor([[1, 0, -100]]))
    assert n.item() == 2
    assert loss_sum.item() == pytest.approx(-math.log(0.75) - math.log(0.25), rel=1e-6)


def test_bits_per_byte_and_perplexity_by_hand():
    assert bits_per_byte(nll_sum_nats=math.log(2) * 12, n_bytes=4) == pytest.approx(3.0)
    assert perplexity(nll_sum_nats=2 * math.log(5), n_tokens=2) == pytest.approx(5.0)


def test_windows_cover_every_target_exactly_once():
    ids = list(range(23))
    covered = []
    for window, n_new in text_windows(ids, max_len=8, stride=3):
        assert len(window) <= 8
        covered += window[len(window) - n_new :]
    assert covered == ids[1:]


def test_long_document_scoring_matches_a_single_pass_when_it_fits(tiny_tokenizer):
    model = make_tiny_model(len(tiny_tokenizer)).eval()
    text = "The assert statement is a convenient way to insert debugging assertions. " * 3
    whole = score_texts(model, tiny_tokenizer, [text], max_len=128, stride=64)
    ids = [tiny_tokenizer.bos_token_id or tiny_tokenizer.eos_token_id] + tiny_tokenizer(text, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits
    expected, n = token_nll_sum(logits[:, :-1], torch.tensor([ids[1:]]))
    assert whole["tokens"] == n.item() == len(ids) - 1
    assert whole["nll_nats"] == pytest.approx(expected.item(), rel=1e-5)
    assert whole["bytes"] == len(text.encode())
    windowed = score_texts(model, tiny_tokenizer, [text], max_len=16, stride=8)
    assert windowed["tokens"] == whole["tokens"]  # every target scored once, with less context


@pytest.mark.slow
def test_pretrain_cli_end_to_end(tmp_path, tiny_tokenizer_dir, capsys):
    out = tmp_path / "run"
    args = [
        "pretrain", f"out={out}", f"tokenizer={tiny_tokenizer_dir}", "model.preset=llama-1m",
        "data.seq_len=64", f"data.cache_dir={tmp_path / 'cache'}", "data.val_fraction=0.1",
        "train.max_steps=40", "train.micro_batch_size=8", "train.eval_every=20", "train.save_every=20",
        "train.progress=false", "optim.lr=3e-3", "schedule.warmup_steps=5", "final_eval_documents=8",
    ]
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in rows if "loss" in r]
    assert len(train) == 40 and sum(train[-5:]) / 5 < train[0] - 1.0  # it learns
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["heldout_bpb"] < summary["unigram_bpb"]
    assert (out / "report" / "loss.png").is_file() and (out / "config.yaml").is_file()
    assert (out / "rejected.jsonl").exists()

    # The export reloads in plain transformers and scores the same through eval-lm.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(out / "final")
    AutoTokenizer.from_pretrained(out / "final")
    held_out = tmp_path / "held.jsonl"
    held_out.write_text(json.dumps({"text": "The import statement finds a module and binds it."}) + "\n")
    assert main(["eval-lm", f"model={out / 'final'}", f"data=[{{path: {held_out}}}]", f"out={tmp_path / 'eval.json'}"]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["bpb"] > 0 and result["documents"] == 1

    # Running again resumes the finished run instead of retraining it.
    assert main(args) == 0
    assert "resumed from" in capsys.readouterr().out


def test_continued_pretraining_starts_from_the_given_weights(tmp_path, tiny_tokenizer_dir):
    from chatforge.config.load import load_config
    from chatforge.stages.pretrain import Config, _build
    from chatforge.tokenizer.load import load_tokenizer

    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    base = make_tiny_model(len(tokenizer), seed=7)
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    cfg = load_config(Config, None, [f"init_from={tmp_path / 'base'}"])
    model = _build(cfg, tokenizer)
    for a, b in zip(base.parameters(), model.parameters()):
        assert torch.equal(a, b)


def test_bad_tokenizer_path_is_one_line(tmp_path, capsys):
    assert main(["pretrain", f"out={tmp_path}", f"tokenizer={tmp_path / 'missing'}"]) == 2
    assert "tokenizer not found" in capsys.readouterr().err


def test_weighted_token_nll_sum_by_hand():
    """Same logits as above: NLL(1) = -ln 3/4, NLL(0) = -ln 1/4; weights 1 and 0.1; the third is ignored."""
    from chatforge.losses.lm import weighted_token_nll_sum

    logits = torch.tensor([[[0.0, math.log(3)], [0.0, math.log(3)], [5.0, -5.0]]])
    labels = torch.tensor([[1, 0, -100]])
    loss_sum, n = weighted_token_nll_sum(logits, labels, torch.tensor([[1.0, 0.1, 7.0]]))
    assert n.item() == 2
    assert loss_sum.item() == pytest.approx(-math.log(0.75) - 0.1 * math.log(0.25), rel=1e-6)
    plain, _ = token_nll_sum(logits, labels)
    assert weighted_token_nll_sum(logits, labels, torch.ones(1, 3))[0].item() == pytest.approx(plain.item())


def test_lora_continued_pretraining_trains_only_adapters_and_exports_a_merged_model(tmp_path, tiny_tokenizer_dir, capsys):
    """mode=lora: only LoRA parameters train; final/ is a plain transformers model whose targeted
    projections moved by the merged update while the embeddings and norms stay bit-identical."""
    from transformers import AutoModelForCausalLM

    from chatforge.tokenizer.load import load_tokenizer

    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    base = make_tiny_model(len(tokenizer), seed=7)
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    out = tmp_path / "lora"
    assert main([
        "pretrain", f"out={out}", f"init_from={tmp_path / 'base'}", "mode=lora", "lora.r=4", "lora.dropout=0.0",
        "data.seq_len=64", f"data.cache_dir={tmp_path / 'cache'}", "train.max_steps=6", "train.micro_batch_size=4",
        "train.eval_every=0", "train.save_every=0", "train.progress=false", "optim.lr=5e-3", "schedule.warmup_steps=1",
        "final_eval_documents=4",
    ]) == 0
    said = capsys.readouterr().out
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["mode"] == "lora" and "lora:" in said
    assert 0 < summary["trainable_parameters"] < summary["parameters"] / 5
    merged = AutoModelForCausalLM.from_pretrained(out / "final")
    before, after = dict(base.named_parameters()), dict(merged.named_parameters())
    assert set(before) == set(after)  # merged: no adapter weights left in final/
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert moved and all(name.endswith(("_proj.weight",)) for name in moved)
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    assert (out / "adapter" / "adapter_config.json").is_file()


def test_lora_pretraining_needs_a_model_to_adapt(tmp_path, capsys):
    assert main(["pretrain", f"out={tmp_path}", "mode=lora"]) == 2
    assert "mode=lora adapts an existing model" in capsys.readouterr().err
