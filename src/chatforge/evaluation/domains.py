"""Per-domain evaluation before and after a stage: bits-per-byte and a knowledge test, as deltas.

A *domain* is held-out text of one kind (world A's documents, the general prose, ...) and, where one
exists, a multiple-choice knowledge test about it (C-Eval layout). Scoring every domain before and
after continued pretraining (or SFT) measures forgetting of the old domain next to learning of the
new one.

    domains:
      - name: world_a
        texts: {path: data/world/pretrain/world_a_valid.jsonl}
        knowledge: {path: data/world/ceval, subject: world_a}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from chatforge.config.base import StrictModel
from chatforge.data.corpus import SourceConfig, read_documents
from chatforge.errors import DataError
from chatforge.run_dir import RejectLog


class KnowledgeTest(StrictModel):
    path: str = Field(
        description="C-Eval-layout directory ({dev,val,test}/<subject>_<split>.csv), or one CSV file (scored zero-shot)"
    )
    subject: str | None = Field(None, description="subject to test (needed with a directory)")
    split: str = Field("test", description="split scored (dev is used for the few-shot exemplars)")
    shots: int = Field(3, ge=0, le=5, description="exemplars from the dev split in each prompt")
    method: Literal["letter", "option"] = Field(
        "letter",
        description="letter: argmax of the option letters' next-token logits (C-Eval); option: the option text "
        "with the highest log-likelihood after the question (cloze form, for small base models)",
    )
    max_questions: int | None = Field(300, ge=1, description="score the first N questions (None: all)")


class DomainEval(StrictModel):
    name: str = Field(description="label in the table and the summary")
    texts: SourceConfig | None = Field(None, description="held-out documents scored for bits-per-byte")
    max_documents: int = Field(200, ge=1, description="documents scored from texts")
    knowledge: KnowledgeTest | None = Field(None, description="multiple-choice knowledge test (letter or option scoring)")


def load_domain_texts(domain: DomainEval, tokenizer, rejects: RejectLog) -> list[str]:
    from chatforge.data.token_cache import render_chat

    if domain.texts is None:
        return []
    texts = []
    for doc in read_documents([domain.texts], rejects):
        texts.append(doc.text if doc.messages is None else render_chat(tokenizer, doc))
        if len(texts) >= domain.max_documents:
            break
    if not texts:
        raise DataError(f"domain {domain.name}: no usable documents in {domain.texts.path}")
    return texts


def _knowledge_questions(test: KnowledgeTest):
    from chatforge.evaluation.multiple_choice import find_subject_files, read_mc_csv

    path = Path(test.path)
    if path.is_file():
        questions, dev = read_mc_csv(path), []
    else:
        if test.subject is None:
            raise DataError(f"knowledge test {path}: a directory needs `subject` (the <subject> of <subject>_test.csv)")
        tests = find_subject_files(path, test.split)
        if test.subject not in tests:
            raise DataError(f"knowledge test {path}: no {test.split} file for subject {test.subject!r} (found {sorted(tests)})")
        questions = read_mc_csv(tests[test.subject])
        dev = []
        if test.shots:
            devs = find_subject_files(path, "dev")
            if test.subject not in devs:
                raise DataError(f"knowledge test {path}: {test.shots} shots need dev/{test.subject}_dev.csv")
            dev = read_mc_csv(devs[test.subject])
    if test.max_questions is not None:
        questions = questions[: test.max_questions]
    return questions, dev


def evaluate_domains(model, tokenizer, domains: list[DomainEval], max_len: int, rejects: RejectLog) -> dict[str, dict]:
    """{domain: {"bpb": ..., "knowledge_acc": ...}} for the model as it is now (every rank must call it)."""
    from chatforge.evaluation.multiple_choice import score_multiple_choice
    from chatforge.evaluation.option_likelihood import score_by_option_likelihood
    from chatforge.models.logprobs import score_texts

    results: dict[str, dict] = {}
    for domain in domains:
        row: dict[str, float] = {}
        texts = load_domain_texts(domain, tokenizer, rejects)
        if texts:
            scored = score_texts(model, tokenizer, texts, max_len, max_len // 2)
            row["bpb"] = scored["bpb"]
        if domain.knowledge is not None:
            questions, dev = _knowledge_questions(domain.knowledge)
            shots = domain.knowledge.shots if dev else 0
            score = score_by_option_likelihood if domain.knowledge.method == "option" else score_multiple_choice
            scored = score(model, tokenizer, questions, dev=dev, shots=shots)
            row["knowledge_acc"] = scored["accuracy"]
            row["knowledge_p_correct"] = scored["p_correct"]  # moves before accuracy does
        results[domain.name] = row
    return results


def compare(before: dict[str, dict] | None, after: dict[str, dict]) -> dict[str, dict]:
    """Per domain: before, after and after - before for every metric both have."""
    out = {}
    for name, row in after.items():
        entry = {"after": row}
        if before is not None and name in before:
            entry["before"] = before[name]
            entry["delta"] = {k: row[k] - before[name][k] for k in row if k in before[name]}
        out[name] = entry
    return out


def format_domain_table(comparison: dict[str, dict]) -> str:
    """A terminal table: one row per domain, before / after / change of bpb and knowledge accuracy."""
    header = f"{'domain':<16}{'bpb before':>12}{'bpb after':>11}{'change':>9}{'know. before':>14}{'after':>8}{'change':>9}"
    lines = [header, "-" * len(header)]

    def cell(entry: dict, part: str, key: str, width: int, fmt: str) -> str:
        value = entry.get(part, {}).get(key)
        signed = fmt.startswith("+")
        spec = f"{'+' if signed else ''}{width}{fmt.lstrip('+')}"
        return f"{'-':>{width}}" if value is None else format(value, spec)

    for name, entry in comparison.items():
        lines.append(
            f"{name:<16}{cell(entry, 'before', 'bpb', 12, '.4f')}{cell(entry, 'after', 'bpb', 11, '.4f')}"
            f"{cell(entry, 'delta', 'bpb', 9, '+.4f')}{cell(entry, 'before', 'knowledge_acc', 14, '.3f')}"
            f"{cell(entry, 'after', 'knowledge_acc', 8, '.3f')}{cell(entry, 'delta', 'knowledge_acc', 9, '+.3f')}"
        )
    return "\n".join(lines)
