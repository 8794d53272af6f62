"""Tokenizer training (`chatforge tokenizer`), the chat template, and `load_tokenizer`'s pad policy."""

from __future__ import annotations

import json
import random

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from chatforge.cli import main
from chatforge.config.load import load_config
from chatforge.errors import ChatforgeError, ConfigError, DataError
from chatforge.run_dir import RejectLog
from chatforge.tokenizer.load import load_tokenizer
from chatforge.tokenizer.templates import CHAT_TEMPLATES, resolve_chat_template, template_special_tokens
from chatforge.tokenizer.train import TokenizerConfig, save_tokenizer, train_tokenizer

SPECIAL_IDS = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, "<|im_start|>": 4, "<|im_end|>": 5}

ENGLISH = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A tokenizer splits text into pieces; the model reads their ids.",
    "Byte-level BPE merges frequent byte pairs until the vocabulary is full.",
    "WordPiece marks pieces inside a word with two hashes, as BERT does.",
    "Alice lives in Paris, works as a baker, and has a cat named Tom.",
    "Bob was born in 1984 in Berlin; he teaches mathematics and keeps bees.",
]
CHINESE = [
    "分词器把文本切分成词元。",
    "中文文本没有空格，每个汉字都是一个词。",
    "我们在中文语料上训练分词器。",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """About 6 KB of text, one document per blank-line block."""
    rng = random.Random(0)
    blocks = []
    for _ in range(40):
        blocks.append(" ".join(rng.sample(ENGLISH, 3)) + "\n" + rng.choice(CHINESE))
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def make_cfg(corpus, out, **kw) -> TokenizerConfig:
    return TokenizerConfig(
        sources=[{"path": str(corpus)}], vocab_size=kw.pop("vocab_size", 400), out=str(out), **kw
    )


@pytest.fixture(scope="module")
def saved(corpus, tmp_path_factory):
    """Both kinds trained, saved and reloaded through AutoTokenizer: {kind: tokenizer}."""
    loaded = {}
    for kind in ("bpe", "wordpiece"):
        out = tmp_path_factory.mktemp(kind)
        cfg = make_cfg(corpus, out, kind=kind)
        save_tokenizer(train_tokenizer(cfg, RejectLog(None)), out)
        loaded[kind] = AutoTokenizer.from_pretrained(str(out))
    return loaded


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_trains_and_reloads_with_documented_special_ids(saved, kind):
    tok = saved[kind]
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert (tok.pad_token, tok.unk_token, tok.bos_token, tok.eos_token) == ("<pad>", "<unk>", "<s>", "</s>")
    assert {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_IDS} == SPECIAL_IDS
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    assert tok.pad_token_id != tok.eos_token_id
    assert set(SPECIAL_IDS) <= set(tok.all_special_tokens)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert 100 < len(tok) <= 400
    assert tok.model_max_length == 2048
    # No bos by default, and eos is never appended: pretraining adds eos per document itself.
    ids = tok("the quick brown fox").input_ids
    assert tok.bos_token_id not in ids and tok.eos_token_id not in ids


def test_bpe_round_trips_any_utf8_exactly(saved):
    tok = saved["bpe"]
    rng = random.Random(1)
    ranges = [
        (0x20, 0x7E),
        (0xA0, 0x24F),
        (0x4E00, 0x9FFF),
        (0x1F300, 0x1FAFF),
        (0x0400, 0x04FF),
        (0x0600, 0x06FF),
    ]
    samples = [
        "中文文本没有空格，每个汉字都是一个词。",
        "emoji 🙂👍🏽👨‍👩‍👧 and flags 🇫🇷",
        "tabs\tand\n\nnewlines  and   spaces \r\n",
        "café naïve e\u0301 ẞ ﬁ ①",
        "a literal <s> in text encodes as bos (special tokens match raw text) and decodes back",
    ]
    for _ in range(30):
        lo, hi = rng.choice(ranges)
        samples.append("".join(chr(rng.randint(lo, hi)) if rng.random() > 0.2 else " " for _ in range(40)))
    assert tok.bos_token_id in tok(samples[4]).input_ids
    for text in samples:
        ids = tok(text).input_ids
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text


def test_wordpiece_round_trips_up_to_normalisation(saved):
    tok = saved["wordpiece"]
    plain = "the quick brown fox jumps over the lazy dog"
    assert tok.decode(tok(plain).input_ids) == plain
    # Whitespace collapses, CJK characters become single words, punctuation re-attaches.
    text = "Alice  lives\nin Paris, works as a baker.\n分词器"
    decoded = tok.decode(tok(text).input_ids)
    assert decoded == "Alice lives in Paris, works as a baker. 分 词 器"
    assert tok(decoded).input_ids == tok(text).input_ids
    assert tok.convert_ids_to_tokens(tok("☃").input_ids) == ["<unk>"]


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_chatml_template_renders_exactly(saved, kind):
    tok = saved[kind]
    messages = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ]
    expected = (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
    assert (
        tok.apply_chat_template(messages[:2], tokenize=False)
        == expected[: expected.index("<|im_start|>user\nAnd")]
    )
    # The {% generation %} markers give the answer-only mask: the answer and its <|im_end|>.
    enc = tok.apply_chat_template(messages[:2], return_dict=True, return_assistant_tokens_mask=True)
    answer = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tok.convert_ids_to_tokens(answer) == ["4", "<|im_end|>"]
    assert (
        enc["input_ids"]
        == tok(tok.apply_chat_template(messages[:2], tokenize=False), add_special_tokens=False).input_ids
    )


def test_add_bos_prepends_bos_to_text_and_chat(corpus, tmp_path):
    cfg = make_cfg(corpus, tmp_path, add_bos=True, max_documents=10, special_tokens={"extra": ["<tool>"]})
    tok = AutoTokenizer.from_pretrained(str(save_tokenizer(train_tokenizer(cfg, RejectLog(None)), tmp_path)))
    ids = tok("hello").input_ids
    assert ids[0] == 2 and ids.count(2) == 1 and 3 not in ids
    assert tok("hello", add_special_tokens=False).input_ids == ids[1:]
    assert tok.convert_tokens_to_ids("<tool>") == 6
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert rendered == "<s><|im_start|>user\nhi<|im_end|>\n"


def test_cli_trains_and_writes_report(corpus, tmp_path, capsys):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "vocab.txt").write_text("stale\n")  # a previous run's file: replaced, not loaded
    rc = main(
        ["tokenizer", f"sources=[{{path: {corpus}}}]", "kind=wordpiece", "vocab_size=300", f"out={out}"]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert (
        "wordpiece tokenizer: vocab size" in printed
        and "characters/token" in printed
        and "<pad>=0" in printed
    )
    report = json.loads((out / "tokenizer_report.json").read_text())
    assert report["kind"] == "wordpiece" and report["vocab_size_requested"] == 300
    assert report["special_tokens"]["eos"] == {"token": "</s>", "id": 3}
    assert report["chars_per_token"] > 1.0 and report["documents"] == 40
    assert (out / "config.yaml").exists() and (out / "rejected.jsonl").read_text() == ""
    assert not (out / "vocab.txt").exists()
    reloaded = load_tokenizer(out)
    assert len(reloaded) == report["vocab_size"] <= 300 and reloaded.get_vocab()["##s"] > 5


def test_empty_corpus_is_a_data_error_and_rejects_are_kept(tmp_path, capsys):
    src = tmp_path / "empty.jsonl"
    src.write_text('{"text": "   "}\n{"body": "no text field"}\nnot json\n')
    with pytest.raises(DataError, match=r"no usable documents in .*empty\.jsonl"):
        train_tokenizer(make_cfg(src, tmp_path / "out"), RejectLog(None))
    out = tmp_path / "out"
    assert main(["tokenizer", f"sources=[{{path: {src}}}]", f"out={out}"]) == 2
    assert "no usable documents" in capsys.readouterr().err
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejected) == ["bad_json", "empty_text", "missing_field"]


def test_vocab_too_small_and_bad_out_are_config_errors(corpus, tmp_path):
    with pytest.raises(ConfigError, match="vocab_size=200 is too small for byte-level BPE.*> 262"):
        train_tokenizer(make_cfg(corpus, tmp_path, vocab_size=200), RejectLog(None))
    with pytest.raises(ConfigError, match="too small for wordpiece on this corpus"):
        train_tokenizer(make_cfg(corpus, tmp_path, kind="wordpiece", vocab_size=40), RejectLog(None))
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["tokenizer", f"sources=[{{path: {corpus}}}]", f"out={afile}", "vocab_size=300"]) == 2
    with pytest.raises(ConfigError, match="is a file"):
        save_tokenizer(object(), afile)
    with pytest.raises(ConfigError, match="distinct"):
        load_config(TokenizerConfig, None, ["special_tokens.pad=</s>"])


def test_chat_template_resolution():
    assert resolve_chat_template("chatml") == CHAT_TEMPLATES["chatml"]
    assert resolve_chat_template("{{ messages[0]['content'] }}") == "{{ messages[0]['content'] }}"
    with pytest.raises(ConfigError, match="did you mean 'chatml'"):
        resolve_chat_template("chatlm")
    assert template_special_tokens(CHAT_TEMPLATES["chatml"]) == ["<|im_start|>", "<|im_end|>"]
    cfg = TokenizerConfig(special_tokens={"im_start": "<|start|>"})
    with pytest.raises(ConfigError, match="<|im_start|>, which is not a special token"):
        train_tokenizer(cfg, RejectLog(None))


def _tiny_backend():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=280, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    backend.train_from_iterator(ENGLISH, trainer)
    return backend


def test_load_tokenizer_pad_policy(saved, tmp_path, caplog):
    # Ours without a pad token: the unused <pad> is taken back, no new token.
    tok = AutoTokenizer.from_pretrained(saved["bpe"].name_or_path)  # a copy: the fixture is shared
    size = len(tok)
    tok.pad_token = None
    tok.save_pretrained(str(tmp_path / "nopad"))
    loaded = load_tokenizer(tmp_path / "nopad")
    assert (loaded.pad_token, loaded.pad_token_id, len(loaded)) == ("<pad>", 0, size)
    assert "using the unused special token '<pad>'" in caplog.text

    # Only unk/bos/eos, pad == eos: refused by default, a new <pad> only when allowed.
    bare = PreTrainedTokenizerFast(
        tokenizer_object=_tiny_backend(),
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
    )
    bare.save_pretrained(str(tmp_path / "bare"))
    with pytest.raises(ChatforgeError, match="pad token '</s>' equal to eos and no unused special token"):
        load_tokenizer(tmp_path / "bare")
    grown = load_tokenizer(tmp_path / "bare", allow_new_pad=True)
    assert grown.pad_token == "<pad>" and grown.pad_token_id == len(bare) == len(grown) - 1
    assert grown.pad_token_id != grown.eos_token_id

    # A spare special token (not bos/eos/unk, not in the chat template) is preferred over adding one.
    bare.add_special_tokens({"extra_special_tokens": ["<|reserved_0|>"]})
    bare.pad_token = None
    bare.save_pretrained(str(tmp_path / "spare"))
    assert load_tokenizer(tmp_path / "spare").pad_token == "<|reserved_0|>"


def test_load_tokenizer_bad_paths(tmp_path):
    with pytest.raises(ChatforgeError, match="tokenizer not found"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(ChatforgeError, match="not a tokenizer directory"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ChatforgeError, match="cannot load the tokenizer"):
        load_tokenizer(tmp_path)


def test_builtin_templates_bring_their_special_tokens():
    cfg = TokenizerConfig(chat_template="llama3")
    assert cfg.special_tokens.extra == ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    mine = TokenizerConfig(chat_template="llama3", special_tokens={"extra": ["<|eot_id|>"]})
    assert mine.special_tokens.extra == ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
