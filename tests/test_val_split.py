"""The token cache's held-out split on a small source: val_fraction > 0 and two or more documents
always hold at least one out (the smoke pretraining's 17 documents at 0.1 held none before)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from chatforge.data.corpus import SourceConfig
from chatforge.data.token_cache import build_token_cache
from chatforge.run_dir import RejectLog


def draw(index: int, seed: int) -> float:
    """The split's draw, written out here: blake2b-64 of "seed:index", little-endian, over 2**64."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest(), "little") / 2**64


def corpus(tmp_path, n: int) -> tuple[SourceConfig, list[str]]:
    texts = [f"document {i}: the {'red' if i % 2 else 'blue'} fox number {i} sat." for i in range(n)]
    path = tmp_path / f"c{n}.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return SourceConfig(path=str(path)), texts


def tokens_of(tokenizer, text: str) -> list[int]:
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def test_seventeen_documents_at_a_tenth_hold_out_the_nearest_one(tmp_path, tiny_tokenizer):
    # seed 0: no draw of indices 0..16 is below 0.1 (the first is index 28); the lowest is index 6 (0.137)
    assert min(draw(i, 0) for i in range(17)) > 0.1 and min(range(17), key=lambda i: draw(i, 0)) == 6
    source, texts = corpus(tmp_path, 17)
    lines: list[str] = []
    cache = build_token_cache([source], tiny_tokenizer, tmp_path / "cache", RejectLog(None), val_fraction=0.1, seed=0,
                              log=lines.append)
    assert (cache.meta["train_docs"], cache.meta["val_docs"]) == (16, 1)
    assert np.asarray(cache.tokens("val")).tolist() == tokens_of(tiny_tokenizer, texts[6])
    assert [json.loads(x)["text"] for x in cache.val_texts_path.read_text().splitlines()] == [texts[6]]
    assert cache.meta["val_bytes"] == len(texts[6].encode())
    # the training files hold the 16 others, in order, each between its offsets
    train, offsets = np.asarray(cache.tokens("train")), np.asarray(cache.doc_offsets("train"))
    kept = [t for i, t in enumerate(texts) if i != 6]
    assert len(offsets) == 17 and offsets[-1] == len(train) == cache.meta["train_tokens"]
    assert [train[offsets[j]:offsets[j + 1]].tolist() for j in range(16)] == [tokens_of(tiny_tokenizer, t) for t in kept]
    assert np.asarray(cache.doc_offsets("val")).tolist() == [0, cache.meta["val_tokens"]]
    assert any("held out none of 17 documents; holding out" in line and "line 7" in line for line in lines)
    # deterministic: built again elsewhere, the same document
    again = build_token_cache([source], tiny_tokenizer, tmp_path / "cache2", RejectLog(None), val_fraction=0.1, seed=0,
                              log=lambda *_: None)
    assert np.asarray(again.tokens("val")).tolist() == np.asarray(cache.tokens("val")).tolist()


@pytest.mark.parametrize(("n", "val_fraction", "expected_val"), [(1, 0.1, 0), (17, 0.0, 0), (2, 0.1, 1)])
def test_no_document_is_moved_without_a_fraction_or_from_a_single_document(tmp_path, tiny_tokenizer, n, val_fraction, expected_val):
    source, _ = corpus(tmp_path, n)
    cache = build_token_cache([source], tiny_tokenizer, tmp_path / "cache", RejectLog(None), val_fraction=val_fraction,
                              seed=0, log=lambda *_: None)
    assert (cache.meta["train_docs"], cache.meta["val_docs"]) == (n - expected_val, expected_val)


def test_a_split_that_holds_some_out_is_the_draws_alone(tmp_path, tiny_tokenizer):
    """40 documents at 0.2 with seed 1: held out exactly those whose draw is below 0.2 (none moved)."""
    source, texts = corpus(tmp_path, 40)
    cache = build_token_cache([source], tiny_tokenizer, tmp_path / "cache", RejectLog(None), val_fraction=0.2, seed=1,
                              log=lambda *_: None)
    expected = [t for i, t in enumerate(texts) if draw(i, 1) < 0.2]
    assert 0 < len(expected) < 40
    assert [json.loads(x)["text"] for x in cache.val_texts_path.read_text().splitlines()] == expected


def test_truncated_documents_are_not_held_out_instead(tmp_path, tiny_tokenizer):
    """A truncated training document is logged as trained on (truncated); when every one was, none
    is moved, and the cache says so."""
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps({"text": f"word {i} " * 60}) + "\n" for i in range(3)))
    lines: list[str] = []
    cache = build_token_cache([SourceConfig(path=str(path))], tiny_tokenizer, tmp_path / "cache", RejectLog(None),
                              val_fraction=0.01, seed=0, max_doc_tokens=16, long_documents="truncate", log=lines.append)
    assert (cache.meta["train_docs"], cache.meta["val_docs"]) == (3, 0)
    assert any("warning: val_fraction held out none of 3 documents, and none is whole" in line for line in lines)
