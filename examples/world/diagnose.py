"""Why tiny models learn the task world slowly: tokenisation, fact exposure, lengths, parameter share.

    python examples/world/diagnose.py WORLD_DIR TOKENIZER_DIR [TOKENIZER_DIR ...]

Prints markdown tables (docs/world.md, "Why the first world was hard"). Pure counting, no model:
about 10 s per tokenizer on one core.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

from transformers import AutoTokenizer

from chatforge.models.presets import PRESETS
from chatforge.world.vocab import ATTRIBUTES


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def pieces(tok, text: str) -> tuple[str, ...]:
    return tuple(tok.decode([i]) for i in tok(text, add_special_tokens=False)["input_ids"])


def tokenisation(world: Path, tok) -> dict[str, str]:
    """How numbers and names split: tokens per item, and how many items split inconsistently."""
    people = read_jsonl(world / "facts/world_a_people.jsonl")
    years = sorted({p["birth_year"] for p in people})
    # The same number in two contexts: after a space (" 1987") and after an opening bracket ("(1987").
    inconsistent = sum(pieces(tok, f" {y}")[1:] != pieces(tok, f"({y}")[1:] and pieces(tok, f" {y}")[0] != " "
                       for y in years)
    numbers = [str(n) for n in range(10, 10000, 7)]
    digit_tokens = [len([p for p in pieces(tok, " " + n) if any(c.isdigit() for c in p)]) for n in numbers]
    multi_digit = sum(1 for i in range(tok.vocab_size) if sum(c.isdigit() for c in tok.decode([i])) > 1)
    names = [p["name"] for p in people]
    name_tokens = [len(pieces(tok, " " + n)) for n in names]
    values = [p[a] for p in people for a in ATTRIBUTES if a != "birth_year"]
    value_tokens = [len(pieces(tok, " " + v)) for v in values]
    return {
        "vocabulary": str(tok.vocab_size),
        "tokens holding 2+ digits": str(multi_digit),
        "years split differently after ' ' and '('": f"{inconsistent} / {len(years)}",
        "numbers 10-9999 not split one token per digit": f"{sum(t != len(n) for t, n in zip(digit_tokens, numbers))}"
                                                           f" / {len(numbers)}",
        "example ' 936', ' 1987', ' 12345'": " | ".join("+".join(repr(p) for p in pieces(tok, s))
                                                     for s in (" 936", " 1987", " 12345")),
        "tokens per full name (mean, max)": f"{statistics.mean(name_tokens):.2f}, {max(name_tokens)}",
        "tokens per attribute value (mean, max)": f"{statistics.mean(value_tokens):.2f}, {max(value_tokens)}",
    }


def exposure(world: Path, tok) -> dict[str, str]:
    """How often, and in how many distinct sentence shapes, each world-A fact is stated."""
    docs = read_jsonl(world / "pretrain/world_a_train.jsonl")
    people = read_jsonl(world / "facts/world_a_people.jsonl")
    fact_docs = [d for d in docs if d["source"] == "facts"]
    styles = Counter(d["style"] for d in fact_docs)
    fact_tokens = sum(len(tok(d["text"], add_special_tokens=False)["input_ids"]) for d in fact_docs)
    prose_tokens = sum(len(tok(d["text"], add_special_tokens=False)["input_ids"]) for d in docs if d["source"] != "facts")
    # Lines that mention a person's name and their value: the statements of that fact.
    statements: dict[tuple[str, str], int] = defaultdict(int)
    shapes: dict[tuple[str, str], set[str]] = defaultdict(set)
    sample = people[:30]
    for d in fact_docs:
        for line in d["text"].split("\n"):
            for p in sample:
                if p["name"] in line:
                    for a in ATTRIBUTES:
                        if p[a] in line:
                            statements[(p["name"], a)] += 1
                            shapes[(p["name"], a)].add(line.replace(p["name"], "N").replace(p[a], "V")[:60])
    counts = list(statements.values())
    return {
        "fact documents (by style)": f"{len(fact_docs)} ({', '.join(f'{k} {v}' for k, v in sorted(styles.items()))})",
        "fact tokens / prose tokens": f"{fact_tokens:,} / {prose_tokens:,}",
        "facts": f"{len(people) * len(ATTRIBUTES):,} ({len(people)} people x {len(ATTRIBUTES)})",
        "tokens per fact per epoch": f"{fact_tokens / (len(people) * len(ATTRIBUTES)):.1f}",
        "lines naming person and value, per fact (first 30 people)":
            f"mean {statistics.mean(counts):.1f}, min {min(counts)}",
        "distinct line shapes per fact": f"mean {statistics.mean(len(s) for s in shapes.values()):.1f}",
        "short-answer QA pairs ('question / Answer: value', train people only)": str(
            sum(d["text"].count("\nAnswer: ") for d in _qa_docs(world))),
    }


def _qa_docs(world: Path) -> list[dict]:
    path = world / "pretrain/world_a_qa.jsonl"  # format 2 worlds only
    return read_jsonl(path) if path.exists() else []


def lengths(world: Path, tok) -> dict[str, str]:
    docs = read_jsonl(world / "pretrain/world_a_train.jsonl")
    doc_lengths = sorted(len(tok(d["text"], add_special_tokens=False)["input_ids"]) for d in docs)
    inst = read_jsonl(world / "instructions/train.jsonl")
    chat = sorted(len(tok(tok.apply_chat_template(r["messages"], tokenize=False), add_special_tokens=False)
                      ["input_ids"]) for r in inst)
    answer = sorted(len(tok(r["messages"][-1]["content"], add_special_tokens=False)["input_ids"]) for r in inst)

    def q(xs: list[int]) -> str:
        return f"median {xs[len(xs) // 2]}, p90 {xs[int(len(xs) * 0.9)]}, max {xs[-1]}"

    return {"pretraining document tokens": q(doc_lengths), "instruction conversation tokens": q(chat),
            "assistant answer tokens": q(answer)}


def difficulty(world: Path) -> dict[str, str]:
    inst = read_jsonl(world / "instructions/test.jsonl")
    by_type = Counter(r["task_type"] for r in inst)
    digits = Counter()
    for r in inst:
        if r["task"] == "arithmetic":
            digits[len(r["answers"][0])] += 1
    return {"held-out instructions by type": ", ".join(f"{k} {v}" for k, v in sorted(by_type.items())),
            "held-out arithmetic answer digits": ", ".join(f"{k}: {v}" for k, v in sorted(digits.items()))}


def parameter_share(vocabs: list[int]) -> list[str]:
    rows = ["| preset | vocab | embedding params | other params | embedding share |", "|---|---|---|---|---|"]
    for name in ("llama-1m", "llama-10m", *[n for n in PRESETS if n.startswith("llama-") and "m-" not in n
                                               and n not in ("llama-1m", "llama-10m", "llama-125m", "llama-1b")]):
        p = PRESETS[name]
        head = p.hidden_size // p.num_heads
        attn = p.hidden_size * head * (2 * p.num_heads + 2 * p.num_kv_heads)
        block = attn + 3 * p.hidden_size * p.intermediate_size + 2 * p.hidden_size
        other = p.num_layers * block + p.hidden_size
        for vocab in vocabs:
            emb = vocab * p.hidden_size * (1 if p.tie_word_embeddings else 2)
            rows.append(f"| {name} | {vocab} | {emb / 1e6:.2f}M | {other / 1e6:.2f}M | {emb / (emb + other):.0%} |")
    return rows


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    world = Path(argv[0])
    for tok_dir in argv[1:]:
        tok = AutoTokenizer.from_pretrained(tok_dir)
        print(f"\n### {tok_dir}\n\n| measure | value |\n|---|---|")
        for part in (tokenisation(world, tok), exposure(world, tok), lengths(world, tok)):
            for key, value in part.items():
                print(f"| {key} | {value} |")
    print("\n| measure | value |\n|---|---|")
    for key, value in difficulty(world).items():
        print(f"| {key} | {value} |")
    print()
    print("\n".join(parameter_share([1024, 2048, 4096, 8192])))


if __name__ == "__main__":
    main(sys.argv[1:])
