"""Convert the task world's knowledge test (C-Eval CSV layout) to the JSONL files the local lm-eval tasks read.

    python examples/eval/lm_eval_task/make_data.py runs/continual/world/ceval examples/eval/lm_eval_task/data

Writes `<subject>_{dev,test}.jsonl` with fields id, question, A, B, C, D, answer (a letter), read by
chatforge's own C-Eval reader so that both evaluators see the same questions.
"""

import json
import sys
from pathlib import Path

from chatforge.evaluation.mc_data import find_subject_files, read_mc_csv

root, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
for split in ("dev", "test"):
    for subject, path in find_subject_files(root, split).items():
        rows = read_mc_csv(path)
        with (out / f"{subject}_{split}.jsonl").open("w", encoding="utf-8") as fh:
            for q in rows:
                fh.write(json.dumps({"id": q.id, "question": q.question, **q.options, "answer": q.answer}) + "\n")
        print(f"{out / f'{subject}_{split}.jsonl'}: {len(rows)} questions")
