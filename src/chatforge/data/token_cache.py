"""Tokenize a corpus once into memory-mapped token files.

<cache_dir>/<key>/
  train.bin, val.bin     token ids back to back (uint16 when the vocabulary fits, else uint32)
  train.idx, val.idx     int64 document start offsets (n_docs + 1), so later stages can keep documents apart
  val.jsonl              the held-out documents' text, for bits-per-byte evaluation
  meta.json              counts, dtype, the key's inputs

Each document is stored as [bos] + tokens + [eos] (bos only when the tokenizer has one). The key
hashes the sources (path, size, mtime), the tokenizer's vocabulary and the split settings, so a
changed input re-tokenizes and an unchanged one is reused. The directory appears atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chatforge.data.corpus import Document, SourceConfig, read_documents
from chatforge.errors import DataError
from chatforge.run_dir import RejectLog

BATCH_DOCS = 256


@dataclass(frozen=True)
class TokenCache:
    root: Path
    meta: dict

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.meta["dtype"])

    def tokens(self, split: str) -> np.ndarray:
        path = self.root / f"{split}.bin"
        if path.stat().st_size == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(path, dtype=self.dtype, mode="r")

    def doc_offsets(self, split: str) -> np.ndarray:
        return np.memmap(self.root / f"{split}.idx", dtype=np.int64, mode="r")  # not read whole: large at scale

    @property
    def val_texts_path(self) -> Path:
        return self.root / "val.jsonl"


def _fingerprint(sources: list[SourceConfig]) -> list[dict]:
    prints = []
    for s in sources:
        entry = s.model_dump()
        path = Path(s.path)
        if not s.path.startswith("builtin:") and path.exists():
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            entry["files"] = [(str(f), f.stat().st_size, int(f.stat().st_mtime)) for f in files]
        entry.pop("weight", None)  # weights and names change sampling, not the tokens
        entry.pop("name", None)
        prints.append(entry)
    return prints


def _tokenizer_fingerprint(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    h = hashlib.sha256(json.dumps(vocab).encode())
    h.update(f"{tokenizer.bos_token_id}/{tokenizer.eos_token_id}".encode())
    h.update(str(getattr(tokenizer, "chat_template", None) or "").encode())  # chat records render through it
    return h.hexdigest()[:16]


def with_bos_eos(ids: list[int], bos: list[int], eos: list[int]) -> list[int]:
    """[bos] + ids + [eos], unless the text already starts / ends with them (chat templates often do)."""
    head = [] if bos and ids[:1] == bos else bos
    tail = [] if ids[-1:] == eos else eos
    return head + ids + tail


def render_chat(tokenizer, doc: Document) -> str:
    """A chat record as the text the model sees: the tokenizer's chat template, no generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{doc.source}: chat records need a tokenizer with a chat template; this tokenizer has none")
    return tokenizer.apply_chat_template(doc.messages, tokenize=False)


def _val_draw(doc_index: int, seed: int) -> float:
    """A uniform number in [0, 1) per (seed, document index): deterministic and order-stable; the
    document is held out when it is below `val_fraction`."""
    digest = hashlib.blake2b(f"{seed}:{doc_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


@dataclass
class _Nearest:
    """The training document whose draw came nearest to `val_fraction` (the lowest draw): the one held
    out when the draws held out none. On a small source that happens often: 17 documents at 0.1 hold
    none out with probability 0.9**17 = 17%, and with seed 0 the first index below 0.1 is 28."""

    draw: float = 2.0
    position: int = -1  # its place among the training documents
    ids: list[int] | None = None
    text: str = ""
    source: str = ""
    where: str = ""

    def offer(self, draw: float, position: int, ids: list[int], text: str, doc: Document) -> None:
        if draw < self.draw:
            self.draw, self.position, self.ids, self.text = draw, position, list(ids), text
            self.source, self.where = doc.source, doc.where


def build_token_cache(
    sources: list[SourceConfig],
    tokenizer,
    cache_dir: str | Path,
    rejects: RejectLog,
    val_fraction: float = 0.0,
    seed: int = 0,
    max_doc_tokens: int | None = None,
    long_documents: str = "split",
    log=print,
) -> TokenCache:
    """Tokenize `sources` into `cache_dir/<key>` unless an identical cache exists; return it."""
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no eos token; pretraining needs one to separate documents")
    key_inputs = {
        "sources": _fingerprint(sources),
        "tokenizer": _tokenizer_fingerprint(tokenizer),
        "val_fraction": val_fraction,
        "seed": seed,
        "max_doc_tokens": max_doc_tokens if long_documents == "truncate" else None,
        "version": 2,  # 2: a source of >= 2 documents holds at least one out when val_fraction > 0
    }
    key = hashlib.sha256(json.dumps(key_inputs, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir) / key
    if (root / "meta.json").is_file():
        meta = json.loads((root / "meta.json").read_text())
        log(f"token cache: reusing {root} ({meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens)")
        return TokenCache(root, meta)

    tmp = Path(cache_dir) / f".tmp-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.uint32
    counts = {"train_docs": 0, "val_docs": 0, "train_tokens": 0, "val_tokens": 0, "val_bytes": 0}
    counts |= {"long_documents": 0, "truncated_tokens": 0}
    offsets = {"train": [0], "val": [0]}
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id]
    nearest = _Nearest()
    started = time.time()
    # Documents longer than the model's context are expected here (windows split them later).
    tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
    with (
        open(tmp / "train.bin", "wb") as train_fh,
        open(tmp / "val.bin", "wb") as val_fh,
        open(tmp / "val.jsonl", "w", encoding="utf-8") as val_texts,
    ):
        outputs = {"train": train_fh, "val": val_fh}
        batch: list = []

        def flush() -> None:
            texts = [render_chat(tokenizer, d) if d.messages is not None else d.text for d in batch]
            encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
            for doc, text, ids in zip(batch, texts, encoded):
                index = counts["train_docs"] + counts["val_docs"]
                draw = _val_draw(index, seed)
                split = "val" if val_fraction > 0 and draw < val_fraction else "train"
                ids = with_bos_eos(ids, bos, eos)
                truncated = False
                if max_doc_tokens is not None and len(ids) > max_doc_tokens:
                    counts["long_documents"] += 1
                    if long_documents == "truncate" and split == "train":
                        dropped = len(ids) - max_doc_tokens
                        counts["truncated_tokens"] += dropped
                        rejects.add(doc.source, doc.where, "truncated", f"kept {max_doc_tokens} of {len(ids)} tokens")
                        ids = ids[: max_doc_tokens - 1] + eos
                        truncated = True
                if split == "train" and not truncated:  # a truncated one is logged as trained on: not a candidate
                    nearest.offer(draw, counts["train_docs"], ids, text, doc)
                np.asarray(ids, dtype=dtype).tofile(outputs[split])
                counts[f"{split}_docs"] += 1
                counts[f"{split}_tokens"] += len(ids)
                offsets[split].append(offsets[split][-1] + len(ids))
                if split == "val":
                    counts["val_bytes"] += len(text.encode("utf-8"))
                    val_texts.write(json.dumps({"text": text, "source": doc.source, "where": doc.where}) + "\n")
            batch.clear()

        for doc in read_documents(sources, rejects):
            batch.append(doc)
            if len(batch) >= BATCH_DOCS:
                flush()
        if batch:
            flush()
    if counts["train_docs"] == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        names = ", ".join(s.path for s in sources)
        raise DataError(f"no usable training documents in {names} ({rejects.summary_line()})")
    if val_fraction > 0 and counts["val_docs"] == 0 and counts["train_docs"] >= 2:
        _hold_out_nearest(tmp, nearest, offsets, counts, dtype, log)
    for split in ("train", "val"):
        np.asarray(offsets[split], dtype=np.int64).tofile(tmp / f"{split}.idx")
    meta = {**counts, "dtype": np.dtype(dtype).name, "vocab_size": len(tokenizer), "key_inputs": key_inputs}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    try:
        os.replace(tmp, root)
    except OSError:  # another process finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)
    secs = time.time() - started
    log(
        f"token cache: {counts['train_docs']:,} train docs ({counts['train_tokens']:,} tokens), "
        f"{counts['val_docs']:,} val docs ({counts['val_tokens']:,} tokens) in {secs:.1f}s -> {root}"
    )
    return TokenCache(root, json.loads((root / "meta.json").read_text()))


def _hold_out_nearest(tmp: Path, nearest: _Nearest, offsets: dict, counts: dict, dtype, log) -> None:
    """Move `nearest` from the training files to the (empty) held-out ones, so that `val_fraction > 0`
    on a source of two or more documents always gives a validation loss to report."""
    total = counts["train_docs"]
    if nearest.ids is None:  # every training document was truncated: none is whole to hold out
        log(f"token cache: warning: val_fraction held out none of {total} documents, and none is whole "
            "(all truncated) to hold out instead; this source has no validation documents")
        return
    start, end = offsets["train"][nearest.position], offsets["train"][nearest.position + 1]
    tokens = np.memmap(tmp / "train.bin", dtype=dtype, mode="r")  # rewritten without the document, not read whole
    with open(tmp / "train.bin.new", "wb") as fh:
        tokens[:start].tofile(fh)
        tokens[end:].tofile(fh)
    del tokens
    os.replace(tmp / "train.bin.new", tmp / "train.bin")
    size = end - start
    offsets["train"] = offsets["train"][: nearest.position + 1] + [o - size for o in offsets["train"][nearest.position + 2 :]]
    np.asarray(nearest.ids, dtype=dtype).tofile(tmp / "val.bin")
    offsets["val"] = [0, len(nearest.ids)]
    with open(tmp / "val.jsonl", "w", encoding="utf-8") as val_texts:
        val_texts.write(json.dumps({"text": nearest.text, "source": nearest.source, "where": nearest.where}) + "\n")
    counts["train_docs"] -= 1
    counts["train_tokens"] -= size
    counts |= {"val_docs": 1, "val_tokens": len(nearest.ids), "val_bytes": len(nearest.text.encode("utf-8"))}
    log(f"token cache: val_fraction held out none of {total} documents; holding out {nearest.source} "
        f"{nearest.where} instead (the one whose draw came nearest), so that validation is not empty")
