"""The two phases of `chatforge clean`.

Phase 1, per shard, on datatrove's executor (N local worker processes, or Slurm): read → language
ID → URL rules → main-content extraction → document filters → line filters → perplexity scores →
quality classifier → sensitive content → decontamination → `work/kept/<shard>.jsonl`. datatrove's
completion markers (`work/logs/completions/`) make a rerun skip finished shards.

Phase 2, once over the whole corpus in input order (it needs every document): exact and near
dedup, the perplexity percentile band, label selection, rebalancing, the length-bucket label, then
the output shards, the side output and the report.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from chatforge.clean.config import Config
from chatforge.clean.decontam import decontam_checks
from chatforge.clean.judge import Judge
from chatforge.clean.ledger import Ledger, doc_record, json_line
from chatforge.clean.perplexity import perplexity_checks
from chatforge.clean.quality import quality_checks
from chatforge.clean.readers import Reader
from chatforge.clean.steps import (
    doc_filter_checks,
    extract_checks,
    langid_checks,
    line_filter_checks,
    sensitive_checks,
    url_checks,
)

# The step names in order; the report lists them so.
PHASE1_STEPS = ("read", "langid", "url", "extract", "doc_filters", "line_filters", "perplexity", "quality", "sensitive",
                "decontam")
PHASE2_STEPS = ("exact_dedup", "near_dedup", "perplexity_band", "select", "rebalance")


class KeptWriter(PipelineStep):
    """The last step of a shard: its surviving documents to `kept/<shard>.jsonl` (renamed into place
    when complete), then the shard's ledger."""

    type = "chatforge"
    name = "write shard"

    def __init__(self, work: Path, ledger: Ledger):
        super().__init__()
        self.work = work
        self.ledger = ledger

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        folder = self.work / "kept"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{rank:05d}.jsonl"
        with (folder / f"{rank:05d}.jsonl.tmp").open("w", encoding="utf-8") as fh:
            for doc in data:
                fh.write(json_line(doc_record(doc)))
        os.replace(folder / f"{rank:05d}.jsonl.tmp", target)
        self.ledger.finish()
        return
        yield  # a generator that yields nothing: the shard ends here


def phase1_steps(cfg: Config, root: Path) -> list[PipelineStep]:
    ledger = Ledger(root, cfg.examples_per_reason)
    steps: list[PipelineStep] = [Reader(cfg.inputs, ledger)]
    plan = [
        ("langid", cfg.langid.enabled, lambda: langid_checks(cfg.langid), cfg.langid.mode),
        ("url", cfg.url.enabled, lambda: url_checks(cfg.url), cfg.url.mode),
        ("extract", cfg.extract.enabled, lambda: extract_checks(cfg.extract), "drop"),
        ("doc_filters", cfg.doc_filters.enabled, lambda: doc_filter_checks(cfg.doc_filters), cfg.doc_filters.mode),
        ("line_filters", cfg.line_filters.enabled, lambda: line_filter_checks(cfg.line_filters), cfg.line_filters.mode),
        ("perplexity", cfg.perplexity.enabled, lambda: perplexity_checks(cfg.perplexity), "drop"),
        ("quality", bool(cfg.quality.model), lambda: quality_checks(cfg.quality.model, cfg.quality.min_score), cfg.quality.mode),
        ("sensitive", cfg.sensitive.enabled, lambda: sensitive_checks(cfg.sensitive), cfg.sensitive.mode),
        ("decontam", cfg.decontam.enabled, lambda: decontam_checks(cfg.decontam), cfg.decontam.mode),
    ]
    for name, enabled, build, mode in plan:
        checks = build() if enabled else []
        if checks:
            steps.append(Judge(name, checks, ledger, mode))
    steps.append(KeptWriter(root / "work", ledger))
    return steps


def run_phase1(cfg: Config, root: Path) -> bool:
    """Run (or resume) the shards. False when they were only submitted to Slurm (or, in a dry run,
    written out for it): rerun `chatforge clean` when the jobs are done to finish."""
    steps = phase1_steps(cfg, root)
    work = root / "work"
    logs = str(work / "logs")
    if cfg.executor == "slurm":
        from datatrove.executor.slurm import SlurmPipelineExecutor

        executor = SlurmPipelineExecutor(pipeline=steps, tasks=cfg.num_tasks, time=cfg.slurm_time,
                                         partition=cfg.slurm_partition, logging_dir=logs, job_name="chatforge-clean")
        if not all(executor.is_rank_completed(r) for r in range(cfg.num_tasks)):
            if cfg.slurm_dry_run:
                _submit_dry(executor)
            else:
                executor.run()
            return False
    else:
        from datatrove.executor.local import LocalPipelineExecutor

        LocalPipelineExecutor(pipeline=steps, tasks=cfg.num_tasks, workers=cfg.workers, logging_dir=logs,
                              start_method="fork").run()
    missing = [r for r in range(cfg.num_tasks) if not (work / "kept" / f"{r:05d}.jsonl").exists()]
    if missing:
        raise RuntimeError(f"shards {missing} finished without their output; rerun to retry them")
    return True


def _submit_dry(executor) -> None:
    """datatrove's whole Slurm launch (pickled executor, ranks_to_run.json, launch_script.slurm) with
    `sbatch` replaced by a no-op: each array task can then be run by hand with
    `SLURM_ARRAY_TASK_ID=i SLURM_NODELIST=localhost launch_pickled_pipeline work/logs/executor.pik`."""
    import datatrove.executor.slurm as slurm

    real = slurm.launch_slurm_job
    slurm.launch_slurm_job = lambda contents, retriever, *args: "dry-run"
    try:
        executor.run()
    finally:
        slurm.launch_slurm_job = real


def read_kept(work: Path, num_tasks: int) -> list[dict]:
    records = []
    for rank in range(num_tasks):
        with (work / "kept" / f"{rank:05d}.jsonl").open(encoding="utf-8") as fh:
            records.extend(json.loads(line) for line in fh)
    records.sort(key=lambda r: r["order"])
    return records


def reset_if_changed(cfg: Config, root: Path, work: Path) -> None:
    """Shards are resumable only under the same phase-1 config: a changed one starts over."""
    fingerprint = cfg.model_dump_json(exclude={"output", "select", "rebalance", "dedup", "truth_field"})
    marker = work / "config.json"
    if marker.exists() and marker.read_text() != fingerprint:
        shutil.rmtree(work)
        shutil.rmtree(root / "dropped", ignore_errors=True)
        shutil.rmtree(root / "counts", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint)
