"""Corpus readers and the token cache: bad input is reported with file, line and reason, never lost."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chatforge.data.corpus import SourceConfig, read_documents
from chatforge.data.token_cache import build_token_cache
from chatforge.errors import DataError
from chatforge.run_dir import RejectLog


def read_all(tmp_path, *sources):
    log = RejectLog(tmp_path / "rejected.jsonl")
    docs = list(read_documents([SourceConfig(**s) for s in sources], log))
    log.close()
    rejected = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    return docs, rejected, log.counts


def test_jsonl_bad_records_are_skipped_with_line_and_reason(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(
        b'{"text": "good one"}\n'
        b'{"text": "bad \xff byte"}\n'
        b'{"text": unquoted}\n'
        b'{"body": "wrong field"}\n'
        b'{"text": 5}\n'
        b'{"text": "   "}\n'
        b'[1, 2]\n'
        b'{"text": "good two"}\n'
    )
    docs, rejected, counts = read_all(tmp_path, {"path": str(path)})
    assert [d.text for d in docs] == ["good one", "good two"]
    assert [(r["where"], r["reason"]) for r in rejected] == [
        ("line 2", "not_utf8"), ("line 3", "bad_json"), ("line 4", "missing_field"),
        ("line 5", "field_not_text"), ("line 6", "empty_text"), ("line 7", "not_an_object"),
    ]
    assert all(r["source"] == str(path) for r in rejected)
    assert sum(counts.values()) == 6


def test_text_files_split_on_blank_lines_and_skip_undecodable_lines(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"para one\nstill one\n\npara two\n\xc3\x28 broken\n")
    docs, rejected, _ = read_all(tmp_path, {"path": str(path)})
    assert [d.text for d in docs] == ["para one\nstill one", "para two"]
    assert rejected[0]["where"] == "line 5" and rejected[0]["reason"] == "not_utf8"


def test_parquet_and_hf_dataset_dir(tmp_path):
    from datasets import Dataset

    ds = Dataset.from_dict({"content": ["alpha text", "", "beta text"]})
    ds.to_parquet(str(tmp_path / "c.parquet"))
    ds.save_to_disk(str(tmp_path / "hf"))
    docs, rejected, _ = read_all(
        tmp_path, {"path": str(tmp_path / "c.parquet"), "text_field": "content"}, {"path": str(tmp_path / "hf"), "text_field": "content"}
    )
    assert [d.text for d in docs] == ["alpha text", "beta text"] * 2
    assert [r["where"] for r in rejected] == ["row 1", "row 1"]


def test_missing_file_and_missing_column_are_clear(tmp_path):
    with pytest.raises(DataError, match=r"input not found: .*nope\.jsonl"):
        read_all(tmp_path, {"path": str(tmp_path / "nope.jsonl")})
    from datasets import Dataset

    Dataset.from_dict({"body": ["x"]}).to_parquet(str(tmp_path / "c.parquet"))
    with pytest.raises(DataError, match=r"no column 'text' \(columns: body\)"):
        read_all(tmp_path, {"path": str(tmp_path / "c.parquet")})


def test_builtin_corpus_is_real_prose():
    docs = list(read_documents([SourceConfig(path="builtin:pydoc")], RejectLog(None)))
    assert len(docs) > 150 and sum(len(d.text) for d in docs) > 400_000


def test_empty_corpus_is_an_error_naming_the_source(tmp_path, tiny_tokenizer):
    path = tmp_path / "empty.jsonl"
    path.write_text('{"text": ""}\n')
    with pytest.raises(DataError, match=r"no usable training documents in .*empty\.jsonl \(1 records skipped.*empty_text: 1"):
        build_token_cache([SourceConfig(path=str(path))], tiny_tokenizer, tmp_path / "cache", RejectLog(None), log=lambda *_: None)


def test_token_cache_layout_and_reuse(tmp_path, tiny_tokenizer):
    path = tmp_path / "c.jsonl"
    texts = [f"document number {i} about the assert statement." for i in range(40)]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    sources = [SourceConfig(path=str(path))]
    cache = build_token_cache(sources, tiny_tokenizer, tmp_path / "cache", RejectLog(None), val_fraction=0.2, seed=1, log=lambda *_: None)
    train, offsets = cache.tokens("train"), cache.doc_offsets("train")
    assert cache.meta["train_docs"] + cache.meta["val_docs"] == 40 and cache.meta["val_docs"] > 0
    assert offsets[-1] == len(train) and len(offsets) == cache.meta["train_docs"] + 1
    first = np.asarray(train[offsets[0] : offsets[1]])
    body = tiny_tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    expected = ([tiny_tokenizer.bos_token_id] if tiny_tokenizer.bos_token_id is not None else []) + body + [tiny_tokenizer.eos_token_id]
    assert first.tolist() == expected or cache.meta["val_docs"] and first.tolist() != []
    again = build_token_cache(sources, tiny_tokenizer, tmp_path / "cache", RejectLog(None), val_fraction=0.2, seed=1, log=lambda *_: None)
    assert again.root == cache.root


def test_long_documents_are_truncated_and_logged(tmp_path, tiny_tokenizer):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": "word " * 200}) + "\n" + json.dumps({"text": "short"}) + "\n")
    log = RejectLog(tmp_path / "rejected.jsonl")
    cache = build_token_cache([SourceConfig(path=str(path))], tiny_tokenizer, tmp_path / "cache", log,
                              max_doc_tokens=16, long_documents="truncate", log=lambda *_: None)
    log.close()
    offsets = cache.doc_offsets("train")
    assert offsets[1] - offsets[0] == 16 and cache.meta["long_documents"] == 1 and cache.meta["truncated_tokens"] > 0
    assert cache.tokens("train")[offsets[1] - 1] == tiny_tokenizer.eos_token_id
    entry = json.loads((tmp_path / "rejected.jsonl").read_text())
    assert entry["reason"] == "truncated" and entry["where"] == "line 1"
