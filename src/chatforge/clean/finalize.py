"""Phase 2 of `chatforge clean`: the steps that need the whole corpus, then the output shards.

In input order: exact dedup, near dedup, the perplexity percentile band, selection rules,
rebalancing; every document also gets its `length_bucket`. Drops go to `dropped/final.jsonl` with
step and reason, like the shards' drops. Output: `data/part-NNNNN.jsonl` (and/or `.parquet`),
records `{"id", "text", "url", "labels", "verdicts"}` that `chatforge pretrain` reads as they are
(`data.sources: [{path: <out>/data}]`); with `output.split_by`, one directory per label value and a
`mixture.yaml` whose weights are each group's summed `weight` labels.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from chatforge.clean.config import Config
from chatforge.clean.dedup import deduplicate
from chatforge.clean.labels import length_bucket, rebalance, select
from chatforge.clean.ledger import Ledger, json_line, record_doc

OUTPUT_FIELDS = ("id", "text", "url", "labels", "verdicts")


class Phase2:
    def __init__(self, cfg: Config, root: Path):
        self.cfg = cfg
        self.ledger = Ledger(root, cfg.examples_per_reason)
        self.ledger.open("final")
        self.band: tuple[float, float] | None = None  # the perplexity band, once cut

    def _outcome(self, step: str, record: dict, reason: str | None, mode: str) -> bool:
        """Count one verdict; True when the record stays."""
        self.ledger.seen(step)
        if reason is None or mode == "label":
            record.setdefault("verdicts", {})[step] = reason or "ok"
            self.ledger.kept(step)
            return True
        self.ledger.drop(step, reason, record_doc(record))
        return False

    def dedup(self, records: list[dict]) -> list[dict]:
        cfg = self.cfg.dedup
        if not (cfg.exact or cfg.near):
            return records
        kept = []
        for record, reason in deduplicate(records, cfg):
            if cfg.exact and not self._outcome("exact_dedup", record, reason if reason == "exact_duplicate" else None, cfg.mode):
                continue
            if cfg.near and not self._outcome("near_dedup", record, reason if reason == "near_duplicate" else None, cfg.mode):
                continue
            kept.append(record)
        return kept

    def perplexity_band(self, records: list[dict]) -> list[dict]:
        cfg = self.cfg.perplexity
        scored = [r["labels"]["ppl"] for r in records if "ppl" in r.get("labels", {})]
        if not cfg.enabled or not scored:
            return records
        low, high = (float(v) for v in np.percentile(scored, [cfg.low_percentile, cfg.high_percentile]))
        kept = []
        for record in records:
            ppl = record["labels"].get("ppl")
            reason = None if ppl is None else ("ppl_below_band" if ppl < low else "ppl_above_band" if ppl > high else None)
            if self._outcome("perplexity_band", record, reason, cfg.mode):
                kept.append(record)
        self.band = (low, high)
        return kept

    def _dropped_all(self, step: str, count_in: int, kept: list[dict], dropped: list[tuple[dict, str]]) -> list[dict]:
        for _ in range(count_in):
            self.ledger.seen(step)
        for _ in kept:
            self.ledger.kept(step)
        for record, reason in dropped:
            self.ledger.drop(step, "rule", record_doc(record), reason)
        return kept

    def run(self, records: list[dict]) -> list[dict]:
        for record in records:
            record_labels = record.setdefault("labels", {})
            record_labels["length_bucket"] = length_bucket(record_labels.get("words") or len(record["text"].split()))
        records = self.dedup(records)
        records = self.perplexity_band(records)
        if self.cfg.select:
            kept, dropped = select(records, self.cfg.select)
            records = self._dropped_all("select", len(records), kept, dropped)
        if self.cfg.rebalance is not None:
            kept, dropped = rebalance(records, self.cfg.rebalance)
            records = self._dropped_all("rebalance", len(records), kept, dropped)
        self.ledger.finish()
        return records


def _write_shards(records: list[dict], folder: Path, formats: list[str], shard_docs: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for start in range(0, max(1, len(records)), shard_docs):
        chunk = [{k: r.get(k) for k in OUTPUT_FIELDS} for r in records[start : start + shard_docs]]
        stem = folder / f"part-{start // shard_docs:05d}"
        if "jsonl" in formats:
            with stem.with_suffix(".jsonl").open("w", encoding="utf-8") as fh:
                fh.writelines(json_line(r) for r in chunk)
            written.append(str(stem.with_suffix(".jsonl")))
        if "parquet" in formats:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table({
                "id": [r["id"] for r in chunk], "text": [r["text"] for r in chunk], "url": [r.get("url") for r in chunk],
                "labels": [json.dumps(r.get("labels") or {}, ensure_ascii=False) for r in chunk],
            })
            pq.write_table(table, stem.with_suffix(".parquet"))
            written.append(str(stem.with_suffix(".parquet")))
    return written


def write_output(cfg: Config, root: Path, records: list[dict]) -> dict:
    """The output shards (and mixture.yaml with split_by). Returns what was written."""
    data = root / "data"
    if data.exists():  # a rerun replaces the output whole: no stale shard of an earlier run survives
        shutil.rmtree(data)
    out = cfg.output
    if out.split_by is None:
        return {"files": _write_shards(records, data, out.formats, out.shard_docs)}
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        groups[str(record.get("labels", {}).get(out.split_by))].append(record)
    files, sources = [], []
    for value, members in sorted(groups.items()):
        folder = data / "".join(c if c.isalnum() or c in "-_." else "_" for c in value)
        files += _write_shards(members, folder, out.formats, out.shard_docs)
        weight = sum(float(r["labels"].get("weight", 1.0)) for r in members)
        sources.append({"path": str(folder), "name": folder.name, "weight": round(weight, 6)})
    (root / "mixture.yaml").write_text(yaml.safe_dump({"sources": sources}, sort_keys=False))
    return {"files": files, "mixture": str(root / "mixture.yaml")}


def read_dropped(root: Path) -> list[dict]:
    records = []
    for path in sorted((root / "dropped").glob("*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            records.extend(json.loads(line) for line in fh)
    return records

