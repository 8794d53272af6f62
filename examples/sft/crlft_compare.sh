#!/usr/bin/env bash
# C-RLFT vs plain SFT on the same mixed-quality data vs SFT on the expert half alone, from the
# world-A base model; held-out exact match per task type. Run from the repository root after
# `bash examples/continual/run_all.sh` (it provides the world, the tokenizer and the base model).
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
W=runs/continual/world
mkdir -p runs/sft
$PY - <<'PY'
import json
rows = [json.loads(l) for l in open("runs/continual/world/mixed_quality/train.jsonl")]
with open("runs/sft/mixed_expert_only.jsonl", "w") as fh:
    fh.writelines(json.dumps(r) + "\n" for r in rows if r["source"] == "expert")
PY
COMMON=(model=runs/continual/a/final data.seq_len=256 train.max_steps=150 train.micro_batch_size=16
        train.save_every=0 train.progress=false optim.lr=1e-3 optim.weight_decay=0.1
        "eval={path: $W/instructions/test.jsonl, max_examples: 314, max_new_tokens: 64}")
$PY -m chatforge sft "${COMMON[@]}" out=runs/sft/mixed_plain "data.sources=[{path: $W/mixed_quality/train.jsonl}]"
$PY -m chatforge sft "${COMMON[@]}" out=runs/sft/mixed_expert_only "data.sources=[{path: runs/sft/mixed_expert_only.jsonl}]"
$PY -m chatforge sft "${COMMON[@]}" out=runs/sft/mixed_crlft "data.sources=[{path: $W/mixed_quality/train.jsonl}]" "crlft={}"
