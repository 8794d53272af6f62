"""Gather what the report card shows from a recipe directory: the card's measures, each stage's
marker and summary, its plots, the Best-of-N and eval tables, provenance and decontamination."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from chatforge.recipes.card.decontam import ngram_overlap
from chatforge.recipes.card.provenance import find_lock, git_state, hardware, input_hashes, package_versions
from chatforge.recipes.plan import CARD, Step, read_marker

# Stages whose inputs are training data (the train side of the decontamination check).
TRAINING_STAGES = {"pretrain", "sft", "rm", "dpo", "rest", "ppo", "grpo", "online-dpo"}
# Config keys whose files are not training data (held-out sets, models, where a stage writes).
NOT_TRAINING_KEYS = {"eval", "val_sources", "eval_sources", "test_prompts", "out", "model", "tokenizer", "reference",
                     "init_from", "cache_dir", "domains", "eval_generation", "dynamics", "path_rm"}
DATA_SUFFIXES = {".jsonl", ".json", ".txt", ".md", ".parquet", ".csv"}


def collect(root: Path, recipe_path: Path, recipe, steps: list[Step]) -> dict[str, Any]:
    markers = {s.name: m for s in steps if (m := read_marker(s.dir)) is not None}
    card_step = next((s for s in steps if s.kind == CARD), None)
    measures = _read_json(card_step.dir / "measures.json") if card_step else None
    return {
        "name": recipe.name or recipe_path.stem,
        "description": recipe.description,
        "root": str(root),
        "recipe_text": recipe_path.read_text(encoding="utf-8"),
        "card": _card_table(measures, steps) if measures else None,
        "stages": [_stage(s, markers.get(s.name)) for s in steps if s.kind != CARD],
        "card_step": _stage(card_step, markers.get(CARD)) if card_step else None,
        "provenance": {
            "git": git_state(), "packages": package_versions(find_lock()), "hardware": hardware(),
            "inputs": input_hashes(root, markers, recipe_path),
        },
        "decontamination": decontamination(steps, card_step),
    }


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def lineage(models: dict[str, str], steps: list[Step]) -> dict[str, str | None]:
    """For each card column, the column of the model its stage started from (sft <- base, dpo <- sft),
    found through the stages' `model` / `init_from` keys; None for a model no column precedes. A model
    no stage of the recipe wrote (a directory from elsewhere) is compared with the column before it."""
    by_path = {str(Path(p)): label for label, p in models.items()}
    labels = list(models)
    parents: dict[str, str | None] = {}
    for index, (label, path) in enumerate(models.items()):
        parent = None
        made_here = False
        for step in steps:
            if step.kind != CARD and Path(path).resolve().is_relative_to(step.dir.resolve()):
                made_here = True
                # sft/dpo/rl: `model` is the starting directory; pretrain: `init_from` (its `model` is a section)
                starts = [step.config.get(key) for key in ("init_from", "model")]
                start = next((s for s in starts if isinstance(s, str)), None)
                if start is not None:
                    parent = by_path.get(str(Path(start)))
                break
        if not made_here and index > 0:
            parent = labels[index - 1]
        parents[label] = parent if parent != label else None
    return parents


def _card_table(measures: dict, steps: list[Step]) -> dict:
    columns = list(measures["measures"])
    rows: list[str] = []
    for column in columns:
        rows += [m for m in measures["measures"][column] if m not in rows]
    measured = {label: path for label, path in measures["models"].items() if label in measures["measures"]}
    parents = lineage(measured, steps)
    gains = []
    for label, parent in parents.items():
        if parent is None:
            continue
        cells = {}
        for row in rows:
            a, b = measures["measures"][label].get(row), measures["measures"][parent].get(row)
            if a and b:
                cells[row] = {"value": a["value"] - b["value"], "sem": _combined(a["sem"], b["sem"])}
        gains.append({"label": f"{label} − {parent}", "cells": cells})
    return {"columns": columns, "rows": rows, "cells": measures["measures"], "reference": measures.get("reference"),
            "gains": gains, "models": measures["models"], "missing": measures.get("missing") or {}}


def _combined(a: float, b: float) -> float:
    """sem of a difference of two independent means (conservative for the paired items the card uses)."""
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return math.nan
    return math.sqrt(a * a + b * b)


def _stage(step: Step, marker: dict | None) -> dict:
    summary = _read_json(step.dir / "report" / "summary.json") or {}
    plots = sorted((step.dir / "report").glob("*.png")) + sorted(step.dir.glob("*.png"))
    return {
        "name": step.name, "kind": step.kind, "dir": str(step.dir),
        "state": (marker or {}).get("state", "not run"),
        "seconds": (marker or {}).get("seconds"),
        "attempts": (marker or {}).get("attempts"),
        "peak_rss_bytes": (marker or {}).get("peak_rss_bytes"),
        "peak_cuda_bytes": (marker or {}).get("peak_cuda_bytes"),
        "tokens_per_s": summary.get("tokens_per_s") or _median_tokens_per_s(step.dir / "metrics.jsonl"),
        "steps": summary.get("steps"),
        "headline": headline(step, summary),
        "plots": [str(p) for p in plots],
        "table": stage_table(step),
    }


def _median_tokens_per_s(path: Path) -> float | None:
    if not path.is_file():
        return None
    values = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row.get("tokens_per_s"), (int, float)):
            values.append(row["tokens_per_s"])
    return statistics.median(values) if values else None


def headline(step: Step, summary: dict) -> list[tuple[str, str]]:
    """A few figures of the stage's own summary that say what it did."""
    out: list[tuple[str, str]] = []

    def add(label: str, value: Any, fmt: str = "{:.4g}") -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((label, fmt.format(value)))

    add("final train loss", summary.get("final_train_loss"))
    add("held-out bits/byte", summary.get("heldout_bpb"))
    add("unigram bits/byte", summary.get("unigram_bpb"))
    add("val loss", summary.get("val_loss"))
    add("parameters", summary.get("parameters"), "{:,}")
    add("tokens seen", summary.get("train_tokens_seen"), "{:,}")
    bon = summary.get("best_of_n")
    if isinstance(bon, list) and bon:
        out.append(("gold reward", f"N=1 {bon[0]['gold']:.3f} -> N={bon[-1]['n']} {bon[-1]['gold']:.3f}"))
    iterations = [row for row in summary.get("iterations") or [] if "eval" in row]
    if iterations:
        first, last = iterations[0]["eval"]["test"]["all"], iterations[-1]["eval"]["test"]["all"]
        out.append(("held-out pass@1", f"{first['pass@1']:.3f} -> {last['pass@1']:.3f}"))
    # Online RL (ppo, grpo, online-dpo): held-out gold at the start and the end, the paired gain, the KL.
    evals, gain = summary.get("eval"), summary.get("gold_gain")
    if isinstance(evals, dict) and "start" in evals and "final" in evals and isinstance(gain, dict):
        start, final = evals["start"], evals["final"]
        kl = final.get("eval/kl")  # NaN at kl.coef 0: no reference, the KL was not measured (not "no drift")
        drift = f"at KL {kl:.2f} nats" if isinstance(kl, (int, float)) and math.isfinite(kl) else "KL not measured"
        out.append(("held-out gold", f"{start['eval/gold']:.3f} -> {final['eval/gold']:.3f} "
                                     f"({gain['gain']:+.3f} ± {gain['se']:.3f}, {gain['z']:.1f} SE) {drift}"))
    for key, label in (("eval", "held-out"), ("eval_before", "before training")):
        block = summary.get(key)
        if isinstance(block, dict):
            add(f"{label} pair accuracy", block.get("val/pairs/accuracy") or block.get("accuracy"))
    return out


def stage_table(step: Step) -> dict | None:
    """The stage's own result table: Best-of-N by N, ReST-EM by iteration, an eval suite's side-by-side."""
    if step.kind == "bon":
        data = _read_json(step.dir / "bon.json")
        if not data:
            return None
        header = ["N", "KL (nats)", "gold reward", "± sem", "proxy reward", "accuracy"]
        rows = [[str(r["n"]), f"{r['kl']:.3f}", f"{r['gold']:.3f}", _num(r.get("gold_sem")), f"{r['proxy']:.3f}", _num(r.get("accuracy"))]
                for r in data["best_of_n"]]
        return {"header": header, "rows": rows, "caption": f"best-of-N on {data['prompts']} prompts (gold: the world's gold reward)"}
    if step.kind == "rest":
        data = _read_json(step.dir / "report" / "summary.json")
        if not data or not data.get("iterations"):
            return None
        header = ["iteration", "kept", "train pass@1", "held-out pass@1", "held-out greedy"]
        rows = []
        for row in data["iterations"]:
            if "eval" not in row:
                continue
            test, train = row["eval"]["test"]["all"], row["eval"]["train"]["all"]
            rows.append([str(row["iteration"]), str(row.get("e_step", {}).get("kept", "-")), _num(train.get("pass@1")),
                         _num(test.get("pass@1")), _num(test.get("greedy"))])
        return {"header": header, "rows": rows, "caption": "ReST-EM per iteration (0 = the starting model)"}
    if step.kind == "eval":
        from chatforge.evaluation.suite import table_rows

        data = _read_json(Path(step.config["out"]))
        if not data:
            return None
        header, rows = table_rows(data)
        return {"header": header, "rows": rows, "caption": f"chatforge eval ({step.config['out']})"}
    return None


def _num(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
        return f"{value:.3f}"
    return "-"


def decontamination(steps: list[Step], card_step: Step | None) -> dict | None:
    """A cleaning stage's own decontamination summary when the recipe has one, else the provisional check."""
    for step in steps:
        summary = _read_json(step.dir / "report" / "summary.json") or {}
        if step.kind == "clean" and isinstance(summary.get("decontamination"), dict):
            found = from_clean(step, summary["decontamination"])
            if found is not None:
                return found
    if card_step is None:
        return None
    card = card_step.config
    eval_sets = {key: Path(card[key]) for key in ("knowledge", "instructions", "verifiable", "pairs") if card.get(key)}
    for file in card.get("text") or []:
        eval_sets[f"text {Path(file).stem}"] = Path(file)
    train_files = training_files(steps)
    if not eval_sets or not train_files:
        return None
    return {"source": "card", "provisional": True, **ngram_overlap(train_files, eval_sets)}


def from_clean(step: Step, pointer: dict) -> dict | None:
    """`chatforge clean`'s decontamination summary (its report/decontamination.json): per eval set, the
    training documents that share an n-gram with it, out of all documents checked."""
    path = Path(pointer.get("path") or step.dir / "report" / "decontamination.json")
    data = _read_json(path if path.is_absolute() or path.exists() else step.dir / path)
    if not data:
        return None
    checked = data.get("documents_checked", 0)
    sets = {
        name: {"items": checked, "overlapping": entry.get("documents_contaminated", 0),
               "share": entry.get("documents_contaminated", 0) / checked if checked else 0.0}
        for name, entry in (data.get("eval_sets") or {}).items()
    }
    return {"source": step.name, "provisional": False, "unit": "training documents",
            "method": f"word {data.get('n')}-gram overlap by `chatforge clean` ({step.name}, mode {data.get('mode')})",
            "train_files": [str(step.dir)], "sets": sets}


def training_files(steps: list[Step]) -> list[Path]:
    files: list[Path] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k not in NOT_TRAINING_KEYS:
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and Path(value).suffix in DATA_SUFFIXES and Path(value).is_file():
            if Path(value) not in files:
                files.append(Path(value))

    for step in steps:
        if step.kind in TRAINING_STAGES:
            walk(step.config)
    return files
