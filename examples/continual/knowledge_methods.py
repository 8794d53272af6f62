"""Letter-logit vs option-likelihood scoring of one model on both worlds' knowledge tests.

    python examples/continual/knowledge_methods.py runs/continual/a/final [runs/continual/world] [300]
"""

from __future__ import annotations

import sys

from chatforge.evaluation.multiple_choice import read_mc_csv, score_multiple_choice
from chatforge.evaluation.option_likelihood import score_by_option_likelihood
from chatforge.models.build import load_pretrained
from chatforge.tokenizer.load import load_tokenizer


def main(model_dir: str, world: str = "runs/continual/world", n: int = 300) -> None:
    model, tokenizer = load_pretrained(model_dir), load_tokenizer(model_dir)
    print("| method | shots | world A acc / acc_norm | world B acc / acc_norm |")
    print("|---|---|---|---|")
    for method in ("letter", "option"):
        for shots in (0, 3):
            cells = []
            for subject in ("world_a", "world_b"):
                questions = read_mc_csv(f"{world}/ceval/test/{subject}_test.csv")[:n]
                dev = read_mc_csv(f"{world}/ceval/dev/{subject}_dev.csv")
                if method == "letter":
                    r = score_multiple_choice(model, tokenizer, questions, dev=dev, shots=shots)
                    cells.append(f"{r['accuracy']:.3f} (letters {r['letter_distribution']})")
                else:
                    r = score_by_option_likelihood(model, tokenizer, questions, dev=dev, shots=shots)
                    cells.append(f"{r['accuracy']:.3f} / {r['accuracy_norm']:.3f}")
            print(f"| {method} | {shots} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1], *(sys.argv[2:3]), *(int(x) for x in sys.argv[3:4]))
