"""Greedy exact match of model dirs on a world's held-out instructions, per task type, string task and
arithmetic rung x operator, with a few failed answers (what `chatforge sft`'s eval reports per task
type only). Every record of instructions/test.jsonl, the world's own checker.

    python examples/world/exact_match_by_rung.py runs/w5/data runs/w5/sft1200_mix/final runs/rl_letters/*/final
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def item_key(record: dict) -> str:
    """`arith r<rung> <op>`, `string <task>` or the task type."""
    from chatforge.world.prompts import canonical_op, operand, read_question
    from chatforge.world.tasks import arithmetic_rung

    kind = record["task_type"]
    if kind == "arithmetic":
        fields = read_question(record["messages"][-2]["content"]).fields
        op = canonical_op(fields["op"])
        return f"arith r{arithmetic_rung(operand(fields['a']), op, operand(fields['b']))} {op}"
    return f"string {record['task']}" if kind == "string" else kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("world", type=Path, help="a written world directory")
    parser.add_argument("models", nargs="+", help="model directories (Hugging Face format)")
    parser.add_argument("--failures", type=int, default=6, help="failed arithmetic/fact answers shown per model")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from chatforge.evaluation.instructions import greedy_answers
    from chatforge.scoring.world import instruction_correct
    from chatforge.tokenizer.load import load_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with (args.world / "instructions" / "test.jsonl").open(encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    for model_dir in args.models:
        model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()
        answers = greedy_answers(model, load_tokenizer(model_dir), [r["messages"][:-1] for r in records],
                                 args.max_new_tokens, 128)
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        failures = []
        for record, answer in zip(records, answers):
            ok = instruction_correct(record["messages"][:-1], answer)
            for key in (item_key(record), "ALL"):
                counts[key][0] += ok
                counts[key][1] += 1
            if not ok and len(failures) < args.failures and record["task_type"] in ("arithmetic", "fact"):
                failures.append(f"   {record['messages'][-2]['content'][:70]!r} -> {shorten(answer)!r}")
        print(f"== {model_dir}")
        print("  " + "; ".join(f"{k} {c}/{n}" for k, (c, n) in sorted(counts.items())))
        print("\n".join(failures), flush=True)


def shorten(answer: str) -> str:
    """The start and the end of a long answer: worked answers go wrong in the middle or at the end."""
    return answer if len(answer) <= 220 else f"{answer[:80]} ... {answer[-130:]}"


if __name__ == "__main__":
    main()
