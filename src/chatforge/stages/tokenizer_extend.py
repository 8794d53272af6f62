"""Extend a BPE tokenizer with tokens learned on domain text, and resize a model to match.

BPE training continues on the domain text where the tokenizer stopped: the most frequent adjacent
pairs of its tokens become new tokens (ids len(old), len(old)+1, ...), their merges appended after
the old ones. Old ids, special tokens and the chat template are unchanged, and old text tokenizes
as before except that runs of old tokens spelling a new token are joined: text containing no new
token's string gives exactly the old ids (see docs/tokenizer.md, "Vocabulary extension").

With `model`, its embeddings (and an untied LM head) grow to the new vocabulary; each new row is the
mean of the old rows of the token's old pieces. Training only the new rows (old rows bit-identical)
uses `chatforge.models.embeddings.freeze_old_rows`.

Writes to `out`: the extended tokenizer (and the resized model, safetensors), config.yaml,
rejected.jsonl, and extend_report.json last (new tokens, tokens per byte before/after on the domain
text, on `old_sources` and on `eval_sources`, documents encoded identically).

Examples:
  chatforge tokenizer extend tokenizer=runs/tok sources='[{path: data/world/pretrain/world_a_train.jsonl}]' out=runs/tok_a
  chatforge tokenizer extend tokenizer=runs/base/final model=runs/base/final sources='[{path: domain.txt}]' num_new_tokens=2000 out=runs/base_ext
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from chatforge.config.base import StrictModel
from chatforge.config.load import dump_config
from chatforge.data.corpus import SourceConfig, read_documents
from chatforge.errors import DataError
from chatforge.run_dir import RejectLog
from chatforge.tokenizer.extend import compare_tokenizers, extend_tokenizer
from chatforge.tokenizer.load import load_tokenizer
from chatforge.tokenizer.train import check_out_dir, describe_sources, save_tokenizer

REPORT_FILE = "extend_report.json"


class Config(StrictModel):
    tokenizer: str = Field(description="tokenizer directory to extend (a BPE tokenizer, e.g. from `chatforge tokenizer`)")
    model: str | None = Field(
        None, description="Hugging Face causal-LM directory whose embeddings are resized and initialised (optional)"
    )
    sources: list[SourceConfig] = Field(description="domain text the new tokens are learned from")
    max_documents: int | None = Field(None, gt=0, description="read at most this many domain documents (all when unset)")
    num_new_tokens: int = Field(1000, gt=0, description="add at most this many tokens")
    min_frequency: int = Field(
        2, ge=1, description="a new token must save at least this many tokens on the domain text"
    )
    old_sources: list[SourceConfig] = Field(
        default_factory=lambda: [SourceConfig(path="builtin:pydoc")],
        description="old-domain text on which the report compares old and new tokenization",
    )
    old_max_documents: int | None = Field(
        1000, gt=0, description="read at most this many old-domain documents (all when unset)"
    )
    eval_sources: list[SourceConfig] = Field(
        default_factory=list,
        description="more text compared old vs new in the report (one entry per source), e.g. held-out domain text",
    )
    out: str = Field("runs/tokenizer_extend", description="output directory (tokenizer, model, report)")

    @field_validator("sources")
    @classmethod
    def _some_sources(cls, value: list[SourceConfig]) -> list[SourceConfig]:
        if not value:
            raise ValueError("give at least one domain source")
        return value


def run(cfg: Config) -> dict[str, Any]:
    """Extend, resize, save, report; returns the report written to `<out>/extend_report.json`."""
    out = Path(cfg.out)
    check_out_dir(out)
    old = load_tokenizer(cfg.tokenizer, pad_policy=False)  # extension changes only the vocabulary
    model, dtype = _load_model(cfg.model, old) if cfg.model else (None, None)
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_FILE).unlink(missing_ok=True)  # written last: its presence marks a complete run
    (out / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")

    with RejectLog(out / "rejected.jsonl") as rejects:
        domain = read_texts(cfg.sources, cfg.max_documents, old, rejects)
        if not domain:
            raise DataError(
                f"no usable domain text in {describe_sources(cfg.sources)} (skipped: {rejects.summary_line()})"
            )
        new, added = extend_tokenizer(old, domain, cfg.num_new_tokens, cfg.min_frequency)
        old_texts = read_texts(cfg.old_sources, cfg.old_max_documents, old, rejects)
        eval_texts = {s.name or s.path: read_texts([s], None, old, rejects) for s in cfg.eval_sources}
    print(rejects.summary_line())
    save_tokenizer(new, out)

    report: dict[str, Any] = {
        "tokenizer": cfg.tokenizer,
        "vocab_size_before": len(old),
        "vocab_size_after": len(new),
        "tokens_added": len(added),
        "tokens_requested": cfg.num_new_tokens,
        "domain": compare_tokenizers(old, new, domain),
        "old_text": compare_tokenizers(old, new, old_texts),
        "eval": {name: compare_tokenizers(old, new, texts) for name, texts in eval_texts.items()},
        "rejected": dict(rejects.counts),
        "new_tokens": [{"id": t.id, "text": t.text, "saved": t.saved} for t in added],
    }
    if model is not None:
        report["model"] = _resize_and_save(model, dtype, old, new, out)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _print_summary(cfg, report, added)
    return report


def read_texts(sources: list[SourceConfig], limit: int | None, tokenizer, rejects: RejectLog) -> list[str]:
    """Document texts; chat records are rendered with the tokenizer's chat template."""
    docs = itertools.islice(read_documents(sources, rejects), limit)
    texts = []
    for doc in docs:
        if doc.messages is None:
            texts.append(doc.text)
        else:
            texts.append(tokenizer.apply_chat_template(doc.messages, tokenize=False))
    return texts


def _load_model(path: str, tokenizer) -> tuple[Any, str | None]:
    """The model in float32 (means computed exactly) and the dtype its config.json names, if any."""
    from chatforge.models.build import load_pretrained
    from chatforge.models.embeddings import check_vocab

    model = load_pretrained(path)
    check_vocab(model, tokenizer, where=f"model {path}")
    config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    return model, config.get("dtype") or config.get("torch_dtype")


def _resize_and_save(model, dtype: str | None, old, new, out: Path) -> dict[str, Any]:
    import torch

    from chatforge.models.embeddings import resize_for_new_tokens

    rows_before = model.get_input_embeddings().num_embeddings
    resize_for_new_tokens(model, old, new)
    if dtype in ("bfloat16", "float16"):  # saved as it came, not twice the size
        model.to(getattr(torch, dtype))
    model.save_pretrained(out)
    head = model.get_output_embeddings()
    return {
        "path": str(out),
        "embedding_rows_before": rows_before,
        "embedding_rows_after": model.get_input_embeddings().num_embeddings,
        "tied_embeddings": head is not None and head.weight is model.get_input_embeddings().weight,
        "initialised_rows": len(new) - len(old),
    }


def _print_summary(cfg: Config, report: dict[str, Any], added) -> None:
    domain, old_text = report["domain"], report["old_text"]
    note = "" if len(added) == cfg.num_new_tokens else f" (asked {cfg.num_new_tokens}; no other pair occurs {cfg.min_frequency} times)"
    print(f"added {len(added)} tokens{note}: vocab {report['vocab_size_before']} -> {report['vocab_size_after']}")
    print("most tokens saved: " + ", ".join(repr(t.text) for t in sorted(added, key=lambda t: -t.saved)[:12]))
    print(
        f"domain text: {domain['tokens_per_byte_before']} -> {domain['tokens_per_byte_after']} tokens/byte "
        f"({domain['tokens_before']:,} -> {domain['tokens_after']:,} tokens, {domain['documents']:,} documents)"
    )
    print(
        f"old text: {old_text['tokens_per_byte_before']} -> {old_text['tokens_per_byte_after']} tokens/byte, "
        f"{old_text['identical_documents']:,} of {old_text['documents']:,} documents encode identically"
    )
    for name, ev in report["eval"].items():
        print(
            f"{name}: {ev['tokens_per_byte_before']} -> {ev['tokens_per_byte_after']} tokens/byte, "
            f"{ev['identical_documents']:,} of {ev['documents']:,} documents encode identically"
        )
    if "model" in report:
        m = report["model"]
        print(f"model: embedding rows {m['embedding_rows_before']} -> {m['embedding_rows_after']}")
    print(f"wrote {cfg.out}/ (load with AutoTokenizer.from_pretrained({cfg.out!r}))")
