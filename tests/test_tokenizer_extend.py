"""Vocabulary extension: old text keeps its tokens, new rows start at their pieces' mean, old rows stay put."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from chatforge.cli import main
from chatforge.data.builtin import pydoc_documents
from chatforge.errors import ChatforgeError, DataError
from chatforge.models.embeddings import (
    embedding_weights,
    freeze_old_rows,
    resize_for_new_tokens,
    train_only_embeddings,
)
from chatforge.tokenizer.extend import compare_tokenizers, extend_tokenizer
from chatforge.world.documents import fact_documents
from chatforge.world.people import build_world
from tiny_models import make_tiny_model

NUM_NEW = 40


@pytest.fixture(scope="module")
def world_people():
    return build_world(size="tiny").people["a"]


@pytest.fixture(scope="module")
def domain_texts(world_people):
    return [d["text"] for d in fact_documents(1234, "a", world_people, 2, "train")]


@pytest.fixture(scope="module")
def extended(tiny_tokenizer, domain_texts):
    return extend_tokenizer(tiny_tokenizer, domain_texts, NUM_NEW, min_frequency=2)


@pytest.fixture(scope="module")
def held_out_pydoc():
    # The tiny tokenizer is trained on the first 60 pydoc sections; these it never saw.
    return list(itertools.islice(pydoc_documents(), 60, 140))


def assert_coarsening(old_tok, new_tok, text):
    """The new ids are the old ids with some runs of >= 2 adjacent old tokens joined into one new token."""
    old_ids = old_tok(text, add_special_tokens=False)["input_ids"]
    new_ids = new_tok(text, add_special_tokens=False)["input_ids"]
    old_strings = old_tok.convert_ids_to_tokens(old_ids)
    i = 0
    for token_id, token in zip(new_ids, new_tok.convert_ids_to_tokens(new_ids)):
        if token_id < len(old_tok):
            assert old_ids[i] == token_id
            i += 1
            continue
        start, joined = i, ""
        while len(joined) < len(token):
            joined += old_strings[i]
            i += 1
        assert joined == token and i - start >= 2
    assert i == len(old_ids)
    return old_ids == new_ids


def test_new_tokens_get_the_next_ids_and_specials_and_template_survive(tiny_tokenizer, extended, tmp_path):
    from transformers import AutoTokenizer

    new, added = extended
    old = tiny_tokenizer
    assert len(added) == NUM_NEW and len(new) == len(old) + NUM_NEW
    assert [t.id for t in added] == list(range(len(old), len(old) + NUM_NEW))
    assert new.convert_ids_to_tokens(list(range(len(old)))) == old.convert_ids_to_tokens(list(range(len(old))))
    for name, i in {"pad": 0, "unk": 1, "bos": 2, "eos": 3}.items():
        assert getattr(new, f"{name}_token_id") == i
    assert new.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [4, 5]
    chat = [{"role": "user", "content": "Where does Ada live?"}, {"role": "assistant", "content": "In Paris."}]
    assert new.chat_template == old.chat_template
    assert new.apply_chat_template(chat, tokenize=False) == old.apply_chat_template(chat, tokenize=False)

    new.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = " ".join(t.text for t in added) + " and some old text"
    assert reloaded(text)["input_ids"] == new(text)["input_ids"]
    assert reloaded.decode(reloaded(text)["input_ids"]) == text


def test_old_text_only_coarsens_and_is_unchanged_without_new_strings(tiny_tokenizer, extended, held_out_pydoc):
    new, added = extended
    for doc in held_out_pydoc:  # every old text: same tokens, some runs joined, same decoded text
        assert_coarsening(tiny_tokenizer, new, doc)
        assert new.decode(new(doc, add_special_tokens=False)["input_ids"]) == doc
    lines = [line for doc in held_out_pydoc for line in doc.splitlines() if line.strip()]
    free = [line for line in lines if not any(t.text in line for t in added)]
    assert len(free) > 300  # the guarantee below is tested on plenty of text
    for line in free:
        assert new(line)["input_ids"] == tiny_tokenizer(line)["input_ids"]


def test_domain_text_gets_shorter_by_exactly_the_tokens_saved(tiny_tokenizer, extended, domain_texts, world_people):
    new, added = extended
    seen = compare_tokenizers(tiny_tokenizer, new, domain_texts)
    # The merges were learned by simulating BPE on the old segmentation; the real encoder agrees.
    assert seen["tokens_before"] - seen["tokens_after"] == sum(t.saved for t in added)
    assert seen["tokens_per_byte_after"] < 0.85 * seen["tokens_per_byte_before"]
    held_out = [d["text"] for d in fact_documents(1234, "a", world_people, 1, "valid")]
    unseen = compare_tokenizers(tiny_tokenizer, new, held_out)
    assert unseen["tokens_after"] < 0.85 * unseen["tokens_before"]
    for doc in held_out:
        assert_coarsening(tiny_tokenizer, new, doc)


@pytest.mark.parametrize("tied", [True, False])
def test_new_rows_are_the_mean_of_their_old_pieces(tiny_tokenizer, extended, tied):
    new, added = extended
    num_old = len(tiny_tokenizer)
    model = make_tiny_model(num_old, tie_word_embeddings=tied)
    before = [w.detach().clone() for w in embedding_weights(model)]
    pieces = resize_for_new_tokens(model, tiny_tokenizer, new)

    weights = embedding_weights(model)
    assert len(weights) == (1 if tied else 2)
    assert model.config.vocab_size == len(new)
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied
    for old_w, w in zip(before, weights):
        assert w.shape[0] == len(new)
        assert torch.equal(w[:num_old], old_w)
        for token in added:
            ids = pieces[token.id]
            assert len(ids) >= 2 and all(i < num_old for i in ids)
            assert "".join(tiny_tokenizer.convert_ids_to_tokens(ids)) == token.token
            assert torch.equal(w[token.id], old_w[ids].mean(0))


@pytest.mark.parametrize("tied", [True, False])
def test_training_new_rows_keeps_old_rows_bit_identical_under_weight_decay(
    tiny_tokenizer, extended, domain_texts, tied
):
    new, _ = extended
    num_old = len(tiny_tokenizer)
    model = make_tiny_model(num_old, tie_word_embeddings=tied)
    resize_for_new_tokens(model, tiny_tokenizer, new)
    train_only_embeddings(model)
    frozen = freeze_old_rows(model, num_old)
    optimizer = torch.optim.AdamW(frozen.param_groups(model, weight_decay=0.1), lr=1e-2)
    frozen.check_optimizer(optimizer)
    assert sum(p.requires_grad for p in model.parameters()) == len(embedding_weights(model))

    before = [w.detach().clone() for w in embedding_weights(model)]
    batch = new(domain_texts[:4], return_tensors="pt", padding=True, truncation=True, max_length=64)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    assert (batch["input_ids"] >= num_old).any()  # the batch uses new tokens
    for _ in range(3):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    for old_w, w in zip(before, embedding_weights(model)):
        assert torch.equal(w[:num_old], old_w[:num_old])
        assert not torch.equal(w[num_old:], old_w[num_old:])

    # The trap this avoids: a plain AdamW decays the whole tensor, zero gradient or not.
    plain = torch.optim.AdamW(embedding_weights(model), lr=1e-2, weight_decay=0.1)
    with pytest.raises(ChatforgeError, match="weight_decay=0.1"):
        frozen.check_optimizer(plain)
    loss = model(**batch, labels=labels).loss
    loss.backward()
    plain.step()
    assert not torch.equal(embedding_weights(model)[0][:num_old], before[0][:num_old])


def test_extend_refuses_unusable_input(tiny_tokenizer, domain_texts, tmp_path):
    from chatforge.run_dir import RejectLog
    from chatforge.tokenizer.train import TokenizerConfig, train_tokenizer

    with pytest.raises(DataError, match="no domain text"):
        extend_tokenizer(tiny_tokenizer, ["", "<s></s>"], 10)
    with pytest.raises(DataError, match="min_frequency=100000"):
        extend_tokenizer(tiny_tokenizer, domain_texts, 10, min_frequency=100_000)
    cfg = TokenizerConfig(kind="wordpiece", vocab_size=300, max_documents=10, out=str(tmp_path))
    with pytest.raises(ChatforgeError, match="WordPiece, not BPE"):
        extend_tokenizer(train_tokenizer(cfg, RejectLog(None)), domain_texts, 10)


def test_cli_extends_tokenizer_and_model(tiny_tokenizer, tiny_tokenizer_dir, domain_texts, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    domain = tmp_path / "domain.jsonl"
    lines = [json.dumps({"text": t}) for t in domain_texts] + ["{not json", json.dumps({"text": ""})]
    domain.write_text("\n".join(lines) + "\n")
    model_dir = tmp_path / "model"
    make_tiny_model(len(tiny_tokenizer), tie_word_embeddings=False).save_pretrained(model_dir)
    out = tmp_path / "out"
    argv = [
        "tokenizer", "extend", f"tokenizer={tiny_tokenizer_dir}", f"model={model_dir}",
        f"sources=[{{path: {domain}}}]", "num_new_tokens=30", "old_max_documents=20", f"out={out}",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "added 30 tokens" in printed and "2 records skipped" in printed

    report = json.loads((out / "extend_report.json").read_text())
    assert report["tokens_added"] == 30 and report["vocab_size_after"] == len(tiny_tokenizer) + 30
    assert report["domain"]["tokens_after"] < report["domain"]["tokens_before"]
    assert report["old_text"]["documents"] == 20
    assert report["rejected"] == {"bad_json": 1, "empty_text": 1}
    assert len((out / "rejected.jsonl").read_text().splitlines()) == 2
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert len(tok) == model.config.vocab_size == model.get_output_embeddings().weight.shape[0] == report["vocab_size_after"]
    ids = tok(domain_texts[0], return_tensors="pt")["input_ids"][:, :120]
    assert ids.max() >= len(tiny_tokenizer) and model(ids).logits.shape[-1] == len(tok)


def test_cli_reports_bad_input_in_one_line(tiny_tokenizer_dir, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"text": "  "}) + "\n")
    base = ["tokenizer", "extend", f"tokenizer={tiny_tokenizer_dir}", f"out={tmp_path / 'out'}"]
    assert main([*base, f"sources=[{{path: {empty}}}]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no usable domain text") and "empty_text: 1" in err and "\n" not in err

    small = tmp_path / "small_model"
    make_tiny_model(200).save_pretrained(small)
    assert main([*base, f"model={small}", "sources=[{path: builtin:pydoc}]"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' progress bars
    assert last.startswith("error: model ") and "has 200 embedding rows but the tokenizer has 384 tokens" in last


@pytest.mark.parametrize("freeze_rest", [True, False])
def test_continued_pretraining_with_new_rows_keeps_old_rows_bit_identical(
    tiny_tokenizer, tiny_tokenizer_dir, domain_texts, tmp_path, capsys, freeze_rest
):
    """`tokenizer extend model=...` then `pretrain init_from=... new_rows={}`: with weight decay and an
    untied head, the old rows of both matrices leave training bit-identical and the new rows move."""
    from safetensors.torch import load_file

    domain = tmp_path / "domain.jsonl"
    domain.write_text("\n".join(json.dumps({"text": t}) for t in domain_texts) + "\n")
    base = tmp_path / "model"
    make_tiny_model(len(tiny_tokenizer), tie_word_embeddings=False).save_pretrained(base)
    ext = tmp_path / "ext"
    assert main([
        "tokenizer", "extend", f"tokenizer={tiny_tokenizer_dir}", f"model={base}", f"sources=[{{path: {domain}}}]",
        "num_new_tokens=30", "old_max_documents=5", f"out={ext}",
    ]) == 0
    out = tmp_path / "cpt"
    assert main([
        "pretrain", f"out={out}", f"init_from={ext}", f"new_rows={{freeze_rest: {str(freeze_rest).lower()}}}",
        f"data.sources=[{{path: {domain}}}]", "data.seq_len=64", f"data.cache_dir={tmp_path / 'cache'}",
        "data.val_fraction=0", "train.max_steps=4", "train.micro_batch_size=4", "train.progress=false",
        "optim.lr=1e-2", "optim.weight_decay=0.1", "schedule.warmup_steps=1", "final_eval_documents=2",
    ]) == 0
    assert f"training embedding rows {len(tiny_tokenizer)}..{len(tiny_tokenizer) + 29} only" in capsys.readouterr().out
    before, after = load_file(ext / "model.safetensors"), load_file(out / "final" / "model.safetensors")
    n_old = len(tiny_tokenizer)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(after[name][:n_old], before[name][:n_old]), name
        assert not torch.equal(after[name][n_old:], before[name][n_old:]), name
    rest = [k for k in before if k not in ("model.embed_tokens.weight", "lm_head.weight")]
    moved = [k for k in rest if not torch.equal(after[k], before[k])]
    assert (moved == []) if freeze_rest else (len(moved) == len(rest))


def test_new_rows_needs_the_old_vocabulary_size(tmp_path):
    from chatforge.errors import ConfigError
    from chatforge.models.embeddings import old_vocab_size_of

    assert old_vocab_size_of(None, 7) == 7
    with pytest.raises(ConfigError, match="new_rows.old_vocab_size is not set"):
        old_vocab_size_of(tmp_path, None)
