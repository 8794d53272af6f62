"""Greedy answers of a chat model to the first held-out instructions of one task, beside the gold answer.

    python examples/world/probe_answers.py MODEL_DIR runs/world/data/instructions/test.jsonl fact --count 12

Shows what a model writes where exact match only says "wrong" (docs/world_learnability.md): the
attribute's commonest value, an answer of the wrong type, a number cut short.
"""

from __future__ import annotations

import argparse
import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("instructions")
    parser.add_argument("task", help="fact, arithmetic, reverse, sort_letters, count_letter, ...")
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    with open(args.instructions, encoding="utf-8") as fh:
        records = [r for r in map(json.loads, fh) if r["task"] == args.task][: args.count]
    right = 0
    for record in records:
        prompt = record["messages"][:-1]
        ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=args.max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=end_of_turn)
        answer = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        gold = record["answers"][-1]
        ok = answer.strip().endswith(f"The answer is {gold}.")
        right += ok
        print(f"{prompt[-1]['content'][:70]!r} -> {answer[:150]!r} | gold {gold!r} | {'right' if ok else 'wrong'}")
    print(f"{right} of {len(records)} end with the right final-answer sentence")


if __name__ == "__main__":
    main()
