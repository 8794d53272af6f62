"""Clean web text into pretraining shards: the seed's seven steps, dedup, labels, selection, and a
report of every drop. Built on datatrove's pipeline steps and executors (docs/data_cleaning.md).

    chatforge clean examples/clean/world_pages.yaml
    chatforge clean examples/clean/world_pages.yaml workers=2 out=runs/clean2

Writes <out>/data/ (JSONL/Parquet shards `chatforge pretrain` reads), <out>/dropped/*.jsonl (every
dropped or unreadable document, with step and reason), <out>/report/ (summary.json, steps.md,
steps.png) and, with decontamination, report/decontamination.json. Shards are resumable: a rerun
skips finished ones.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from chatforge.clean.config import Config
from chatforge.clean.decontam import build_index, summarize
from chatforge.clean.finalize import Phase2, read_dropped, write_output
from chatforge.clean.ledger import merge_counts
from chatforge.clean.pipeline import PHASE1_STEPS, PHASE2_STEPS, read_kept, reset_if_changed, run_phase1
from chatforge.clean.report import markdown_table, step_rows, write_report
from chatforge.clean.truth import score_drops
from chatforge.config.load import dump_config

__all__ = ["Config", "run"]


def run(cfg: Config) -> dict:
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    work = root / "work"
    reset_if_changed(cfg, root, work)
    started = time.perf_counter()
    if not run_phase1(cfg, root):
        print(f"phase 1 handed to Slurm ({cfg.num_tasks} tasks; script in {work / 'logs'}); "
              "rerun this command when they are done to finish")
        return {"submitted": True}
    phase1_s = time.perf_counter() - started
    records = read_kept(work, cfg.num_tasks)
    phase2 = Phase2(cfg, root)
    records = phase2.run(records)
    output = write_output(cfg, root, records)
    counts, examples = merge_counts(sorted((root / "counts").glob("*.json")), cfg.examples_per_reason)
    rows = step_rows(counts, PHASE1_STEPS + PHASE2_STEPS)
    read = counts.get("read", {"seen": 0})
    summary = {
        "inputs": [i.path for i in cfg.inputs], "records_read": read["seen"], "documents_kept": len(records),
        "workers": cfg.workers, "tasks": cfg.num_tasks, "phase1_seconds": round(phase1_s, 2),
        "seconds": round(time.perf_counter() - started, 2), "steps": rows, "examples": examples, "output": output,
        "perplexity_band": phase2.band,
    }
    dropped = read_dropped(root) if cfg.truth_field or cfg.decontam.enabled else []
    if cfg.truth_field:
        summary["truth"] = score_drops(records, dropped, cfg.truth_field, PHASE1_STEPS + PHASE2_STEPS)
    if cfg.decontam.enabled:
        checked = records + [r for r in dropped if "contamination" in r.get("labels", {})]
        decontam = summarize(cfg.decontam, build_index(cfg.decontam).sets, checked)
        path = Path(cfg.decontam.summary) if cfg.decontam.summary else root / "report" / "decontamination.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(decontam, indent=2, ensure_ascii=False) + "\n")
        summary["decontamination"] = {"path": str(path), "documents_contaminated": decontam["documents_contaminated"]}
    write_report(root / "report", summary, rows)
    print(markdown_table(rows), end="")
    print(f"kept {len(records)} of {read['seen']} records in {summary['seconds']:.1f}s -> {root / 'data'} "
          f"| dropped documents in {root / 'dropped'} | report in {root / 'report'}")
    return summary
