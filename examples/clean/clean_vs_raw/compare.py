"""Paired per-document bits-per-byte of two models on the same held-out documents.

    python examples/clean/clean_vs_raw/compare.py A_MODEL B_MODEL HELDOUT.jsonl [--max-len 256]

Prints each model's corpus bpb (total bits / total bytes) and the mean per-document difference
B - A with its standard error (documents are the unit: the SE is the spread of the paired
differences / sqrt(n)), so "A beats B" is read against its noise.
"""

from __future__ import annotations

import argparse
import json
import math

import torch
from transformers import AutoModelForCausalLM

from chatforge.stages.eval_lm import score_texts
from chatforge.tokenizer.load import load_tokenizer


def per_document(model_dir: str, texts: list[str], max_len: int) -> list[dict]:
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = load_tokenizer(model_dir)
    with torch.no_grad():
        return [score_texts(model, tokenizer, [t], max_len, max_len // 2) for t in texts]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("heldout")
    parser.add_argument("--max-len", type=int, default=128)
    args = parser.parse_args()
    texts = [json.loads(line)["text"] for line in open(args.heldout, encoding="utf-8") if line.strip()]
    a, b = per_document(args.a, texts, args.max_len), per_document(args.b, texts, args.max_len)
    corpus = {name: sum(r["nll_nats"] for r in rows) / math.log(2) / sum(r["bytes"] for r in rows)
              for name, rows in (("a", a), ("b", b))}
    diffs = [rb["bpb"] - ra["bpb"] for ra, rb in zip(a, b)]
    mean = sum(diffs) / len(diffs)
    se = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) ** 0.5 / len(diffs) ** 0.5
    print(json.dumps({"documents": len(texts), "bpb_a": round(corpus["a"], 4), "bpb_b": round(corpus["b"], 4),
                      "mean_doc_diff_b_minus_a": round(mean, 4), "se": round(se, 4),
                      "a_better_on": sum(d > 0 for d in diffs)}, indent=2))


if __name__ == "__main__":
    main()
