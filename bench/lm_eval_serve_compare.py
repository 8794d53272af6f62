"""Item by item: lm-evaluation-harness's `local-completions` against `chatforge serve` vs chatforge's own
option scoring, on the same multiple-choice questions (docs/serving.md, "lm-evaluation-harness").

    python bench/lm_eval_serve_compare.py MODEL_DIR CEVAL_ROOT SUBJECT SAMPLES_JSONL [N]

SAMPLES_JSONL is the `--log_samples` file lm_eval wrote. chatforge scores the first N questions with
`score_by_option_likelihood` (3 shots, bos) in this process; the script prints how many predictions
agree and the largest difference between the two evaluators' log-likelihood gaps (option i minus
option A), which is what decides the prediction.
"""

from __future__ import annotations

import json
import math
import sys

import torch

from chatforge.evaluation.mc_data import find_subject_files, read_mc_csv
from chatforge.evaluation.option_likelihood import score_by_option_likelihood
from chatforge.serve.server import load_model


def main(model_dir: str, root: str, subject: str, samples_path: str, n: int = 300) -> None:
    torch.manual_seed(0)
    model, tokenizer = load_model(model_dir, "cpu", "float32")
    test = read_mc_csv(find_subject_files(root, "test")[subject])[:n]
    dev = read_mc_csv(find_subject_files(root, "dev")[subject])
    ours = score_by_option_likelihood(model, tokenizer, test, dev, shots=3, keep_predictions=True)
    samples = sorted((json.loads(line) for line in open(samples_path, encoding="utf-8")), key=lambda s: s["doc_id"])
    assert len(samples) == len(test), (len(samples), len(test))
    agree, worst = 0, 0.0
    for mine, theirs in zip(ours["predictions"], samples):
        lls = [float(r[0][0]) for r in theirs["resps"]]
        their_pick = "ABCD"[max(range(4), key=lambda i: lls[i])]
        agree += their_pick == mine["prediction"]
        my_gaps = [math.log(mine["probs"][x]) - math.log(mine["probs"]["A"]) for x in "ABCD"]
        worst = max(worst, max(abs((lls[i] - lls[0]) - my_gaps[i]) for i in range(4)))
    acc = sum(s["acc"] for s in samples) / len(samples)
    print(f"{len(test)} questions: chatforge accuracy {ours['accuracy']:.4f}, lm-eval via chatforge serve {acc:.4f}; "
          f"same prediction on {agree}/{len(test)}; largest log-likelihood gap difference {worst:.2e} nats")


if __name__ == "__main__":
    main(*sys.argv[1:5], *(int(a) for a in sys.argv[5:6]))
