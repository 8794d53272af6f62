"""The knowledge test split by whose facts it asks: people asked about in training text, and the rest.

    python examples/world/knowledge_by_split.py MODEL_DIR WORLD_DIR [--world a] [--shots 3] [--letters]

The world's pretraining QA text (`pretrain/world_*_qa.jsonl`) and its training instructions ask
only about `train` people, so the `test` people's questions measure extraction: a fact read only as
a statement, retrieved by a question. Scores every question of `ceval/test` by option likelihood
(and by letter with --letters); prints accuracy ± standard error per person split (docs/world.md).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatforge.evaluation.mc_data import read_mc_csv
from chatforge.evaluation.multiple_choice import score_multiple_choice
from chatforge.evaluation.option_likelihood import score_by_option_likelihood


def accuracy_line(name: str, correct: list[bool]) -> str:
    n = len(correct)
    p = sum(correct) / n
    return f"| {name} | {n} | {p:.3f} ± {math.sqrt(p * (1 - p) / n):.3f} |"


def load(model_dir: str, tokenizer, preset: str | None):
    if preset is None:
        return AutoModelForCausalLM.from_pretrained(model_dir)
    from safetensors.torch import load_file

    from chatforge.models.presets import hf_config

    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id}
    model = AutoModelForCausalLM.from_config(hf_config(preset, len(tokenizer), ids, {}))
    model.load_state_dict(load_file(str(Path(model_dir) / "model.safetensors")), strict=False)
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("world")
    parser.add_argument("--world-id", default="a")
    parser.add_argument("--shots", type=int, default=3)
    parser.add_argument("--letters", action="store_true", help="also score by letter logits")
    parser.add_argument("--tokenizer", help="for a training checkpoint dir (model.safetensors, no config.json)")
    parser.add_argument("--preset", help="the checkpoint's preset, with --tokenizer")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--greedy", action="store_true",
                        help="also answer each question by greedy generation after 'Answer:' (no options shown)")
    args = parser.parse_args()
    world = Path(args.world)
    people = [json.loads(line) for line in (world / f"facts/world_{args.world_id}_people.jsonl").open()]
    split_of = {p["name"]: p["split"] for p in people}
    names = re.compile("|".join(sorted((re.escape(n) for n in split_of), key=len, reverse=True)))
    subject = f"world_{args.world_id}"
    questions = read_mc_csv(world / f"ceval/test/{subject}_test.csv")
    dev = read_mc_csv(world / f"ceval/dev/{subject}_dev.csv")
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    model = load(args.model, tokenizer, args.preset).to(args.device)
    torch.manual_seed(0)
    methods = {"option": score_by_option_likelihood}
    if args.letters:
        methods["letter"] = score_multiple_choice
    splits = [split_of[names.search(q.question).group(0)] for q in questions]

    def print_by_split(method: str, right: list[bool]) -> None:
        print(accuracy_line(f"{method} / all", right))
        for split in ("train", "test"):
            print(accuracy_line(f"{method} / {split} people", [r for r, s in zip(right, splits) if s == split]))

    print("| method / people | questions | accuracy ± SE |\n|---|---|---|")
    for method, score in methods.items():
        result = score(model, tokenizer, questions, dev, shots=args.shots, keep_predictions=True)
        print_by_split(method, [p["prediction"] == p["answer"] for p in result["predictions"]])
    if args.greedy:
        print_by_split("greedy", [greedy_answer(model, tokenizer, q.question) == q.options[q.answer] for q in questions])


@torch.no_grad()
def greedy_answer(model, tokenizer, question: str, max_new_tokens: int = 12) -> str:
    """The model's own answer in the QA text's form (`question\nAnswer: value`), first line, stripped:
    what generation can extract, where option scoring only ranks four given answers."""
    ids = tokenizer(f"{question}\nAnswer:", return_tensors="pt").input_ids.to(model.device)
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).split("\n")[0].strip()


if __name__ == "__main__":
    main()
