"""Exact and near deduplication over the whole corpus, in input order (the first copy is kept).

Exact: the SHA-1 of the normalised text (lower-cased, punctuation removed, white space collapsed),
so copies that differ only in case, spacing or punctuation count as one.
Near: datasketch's MinHash of the set of word `ngram`-shingles, and its MinHashLSH index at
`threshold`, its bands tilted towards recall; a candidate the index returns counts as a duplicate
only when the two MinHashes' estimated Jaccard similarity reaches the threshold.
Every document gets the label `dup_cluster`: the id of the first document of its cluster (its own
id when it is the first).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

from chatforge.clean.config import DedupConfig

_NON_WORD = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    return _SPACE.sub(" ", _NON_WORD.sub("", text.lower())).strip()


def exact_key(text: str) -> str:
    return hashlib.sha1(normalise(text).encode("utf-8")).hexdigest()


def shingles(text: str, n: int) -> set[str]:
    tokens = normalise(text).split()
    if len(tokens) <= n:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


class Deduplicator:
    def __init__(self, cfg: DedupConfig):
        from datasketch import MinHashLSH

        self.cfg = cfg
        self.exact_first: dict[str, str] = {}
        # Bands chosen to weigh a missed duplicate 9x a spurious candidate: every candidate is
        # verified against the threshold below, so a spurious one costs only a comparison.
        self.lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, weights=(0.1, 0.9))
        self.hashes: dict[str, object] = {}
        self.cluster_of: dict[str, str] = {}

    def _minhash(self, text: str):
        from datasketch import MinHash

        minhash = MinHash(num_perm=self.cfg.num_perm, seed=self.cfg.seed)
        minhash.update_batch([s.encode("utf-8") for s in shingles(text, self.cfg.ngram)])
        return minhash

    def check(self, doc_id: str, text: str) -> tuple[str | None, str, float | None]:
        """(reason or None, cluster id, similarity to the earlier copy) for the next document in order."""
        if self.cfg.exact:
            key = exact_key(text)
            if key in self.exact_first:
                first = self.exact_first[key]
                return "exact_duplicate", self.cluster_of.get(first, first), 1.0
            self.exact_first[key] = doc_id
        if self.cfg.near:
            minhash = self._minhash(text)
            best, best_sim = None, 0.0
            for candidate in self.lsh.query(minhash):
                similarity = minhash.jaccard(self.hashes[candidate])
                if similarity > best_sim:
                    best, best_sim = candidate, similarity
            if best is not None and best_sim >= self.cfg.threshold:
                return "near_duplicate", self.cluster_of.get(best, best), round(best_sim, 4)
            if doc_id not in self.hashes:
                self.lsh.insert(doc_id, minhash)
                self.hashes[doc_id] = minhash
        self.cluster_of[doc_id] = doc_id
        return None, doc_id, None


def deduplicate(records: list[dict], cfg: DedupConfig) -> Iterator[tuple[dict, str | None]]:
    """Yield (record, reason or None) in order; each record gets `dup_cluster` (and `dup_similarity`)."""
    dedup = Deduplicator(cfg)
    for record in records:
        reason, cluster, similarity = dedup.check(record["id"], record["text"])
        record.setdefault("labels", {})["dup_cluster"] = cluster
        if similarity is not None:
            record["labels"]["dup_similarity"] = similarity
        yield record, reason
