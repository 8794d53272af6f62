"""Train a byte-level BPE (GPT-2 style) or WordPiece (BERT style) tokenizer on the configured text.

Writes a Hugging Face tokenizer directory to `out` that `AutoTokenizer.from_pretrained(out)` loads,
with bos/eos/pad/unk and the ChatML role tokens at fixed low ids
(0 <pad>, 1 <unk>, 2 <s>, 3 </s>, 4 <|im_start|>, 5 <|im_end|>, then special_tokens.extra)
and a chat template (default: ChatML). The tokenizer never appends eos; bos only with add_bos=true.
Next to the tokenizer files: config.yaml (the resolved config), rejected.jsonl (skipped records)
and tokenizer_report.json (vocab size, special token ids, characters per token on the training text),
written last. An existing `out` directory is reused and its tokenizer files replaced.

Examples:
  chatforge tokenizer out=runs/tok
  chatforge tokenizer kind=wordpiece vocab_size=2000 out=/tmp/tok
  chatforge tokenizer sources='[{path: corpus.jsonl}]' vocab_size=32000 add_bos=true
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from chatforge.config.load import dump_config
from chatforge.run_dir import RejectLog
from chatforge.tokenizer.train import (
    TokenizerConfig,
    check_config,
    check_out_dir,
    corpus_stats,
    save_tokenizer,
    special_token_ids,
    train_tokenizer,
)

Config = TokenizerConfig

REPORT_FILE = "tokenizer_report.json"


def run(cfg: TokenizerConfig) -> dict[str, Any]:
    """Train, save, and report; returns the report written to `<out>/tokenizer_report.json`."""
    out = Path(cfg.out)
    check_config(cfg)
    check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_FILE).unlink(missing_ok=True)  # written last: its presence marks a complete run
    (out / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")

    start = time.perf_counter()
    with RejectLog(out / "rejected.jsonl") as rejects:
        tok = train_tokenizer(cfg, rejects)
    seconds = time.perf_counter() - start
    print(rejects.summary_line())
    save_tokenizer(tok, out)

    stats = corpus_stats(tok, cfg)
    ids = special_token_ids(cfg)
    report: dict[str, Any] = {
        "kind": cfg.kind,
        "vocab_size": len(tok),
        "vocab_size_requested": cfg.vocab_size,
        "special_tokens": {name: {"token": tok.convert_ids_to_tokens(i), "id": i} for name, i in ids.items()},
        "add_bos": cfg.add_bos,
        "train_seconds": round(seconds, 3),
        "rejected": dict(rejects.counts),
        **stats,
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    note = ""
    if len(tok) < cfg.vocab_size:
        note = f" (asked {cfg.vocab_size}; no other pair occurs min_frequency={cfg.min_frequency} times)"
    print(f"{cfg.kind} tokenizer: vocab size {len(tok)}{note}")
    print(
        "special token ids: "
        + ", ".join(f"{v['token']}={v['id']}" for v in report["special_tokens"].values())
    )
    sample = f" (first {stats['characters']:,} characters)" if stats["sampled"] else ""
    print(
        f"compression on the training text{sample}: {stats['chars_per_token']} characters/token, "
        f"{stats['bytes_per_token']} bytes/token over {stats['documents']:,} documents"
    )
    print(f"wrote {out}/ (load with AutoTokenizer.from_pretrained({str(out)!r}))")
    return report
