"""Multiple choice from C-Eval / MMLU CSV files: letter logits or option likelihood, per subject."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from chatforge.errors import DataError
from chatforge.evaluation.mc_data import find_subject_files, read_mc_csv
from chatforge.evaluation.tasks.base import ModelContext, TaskBase


class MultipleChoiceTask(TaskBase):
    kind: Literal["multiple_choice"] = "multiple_choice"
    path: str = Field(description="ROOT with {dev,val,test}/<subject>_<split>.csv (C-Eval or MMLU), or one CSV file")
    split: str = Field("test", description="split scored; the dev split gives the k-shot exemplars")
    subjects: list[str] | None = Field(None, description="subjects to score (default: every file of the split)")
    shots: int = Field(5, ge=0, description="exemplars from the dev split per prompt (0 with a single file)")
    method: Literal["letter", "option"] = Field(
        "letter", description="letter: argmax of A-D next-token logits; option: option text log-likelihood (cloze)"
    )
    layout: Literal["auto", "ceval", "mmlu"] = Field("auto", description="CSV layout")
    max_questions: int | None = Field(None, ge=1, description="first N questions per subject (None: all)")
    batch_size: int = Field(16, ge=1, description="prompts per forward pass")


def load_questions(cfg: MultipleChoiceTask):
    """(questions, dev exemplars by subject) for the task's files."""
    path = Path(cfg.path)
    if path.is_file():
        questions = read_mc_csv(path, cfg.layout)
        return questions[: cfg.max_questions] if cfg.max_questions else questions, {}
    files = find_subject_files(path, cfg.split)
    if cfg.subjects is not None:
        unknown = [s for s in cfg.subjects if s not in files]
        if unknown:
            raise DataError(f"multiple_choice {path}/{cfg.split}: no file for subject(s) {', '.join(unknown)} (found {', '.join(files)})")
        files = {s: files[s] for s in cfg.subjects}
    questions = []
    for subject, file in files.items():
        rows = read_mc_csv(file, cfg.layout, subject)
        questions += rows[: cfg.max_questions] if cfg.max_questions else rows
    dev = {}
    if cfg.shots:
        devs = find_subject_files(path, "dev")
        missing = [s for s in files if s not in devs]
        if missing:
            raise DataError(f"multiple_choice {path}: {cfg.shots} shots need dev/<subject>_dev.csv for {', '.join(missing)}")
        dev = {s: read_mc_csv(devs[s], cfg.layout, s) for s in files}
    return questions, dev


def run(ctx: ModelContext, cfg: MultipleChoiceTask) -> dict:
    from chatforge.evaluation.multiple_choice import score_multiple_choice
    from chatforge.evaluation.option_likelihood import score_by_option_likelihood

    questions, dev = load_questions(cfg)
    shots = cfg.shots if dev else 0
    score = score_by_option_likelihood if cfg.method == "option" else score_multiple_choice
    result = score(ctx.model, ctx.tokenizer, questions, dev=dev, shots=shots, batch_size=cfg.batch_size)
    metrics = {"accuracy": result["accuracy"]}
    if "accuracy_norm" in result:
        metrics["accuracy_norm"] = result["accuracy_norm"]
    metrics["p_correct"] = result["p_correct"]
    if len(result["per_subject"]) > 1:
        metrics |= {f"accuracy/{s}": v["accuracy"] for s, v in result["per_subject"].items()}
    return {"metrics": metrics, "details": result}
