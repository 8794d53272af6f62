#!/usr/bin/env bash
# Full fine-tuning vs LoRA vs freeze-tuning vs full-then-LoRA on the same data, steps and LR, from the
# world-A base model: held-out exact match, trainable parameters, tokens/s and peak memory in one table
# (examples/sft/modes_table.py), 100 steps each. Run from the repository root after `bash examples/continual/run_all.sh`
# (it provides the world, the tokenizer and the base model). About 15 minutes on 2 idle CPU cores.
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one thread per process: steadier tokens/s on a shared machine
COMMON=(examples/sft/world_full.yaml optim.lr=1e-3 optim.weight_decay=0.1 train.max_steps=100 train.save_every=0 train.progress=false eval_before=false)
$PY -m chatforge sft "${COMMON[@]}" out=runs/sft/modes/full mode=full
$PY -m chatforge sft "${COMMON[@]}" out=runs/sft/modes/lora mode=lora lora.r=16 lora.alpha=32
$PY -m chatforge sft "${COMMON[@]}" out=runs/sft/modes/freeze mode=freeze freeze.train_last_n_blocks=2 \
    "freeze.train_modules=[model\.norm]"
$PY -m chatforge sft "${COMMON[@]}" out=runs/sft/modes/full_then_lora mode=full_then_lora lora.r=16 lora.alpha=32 \
    full_then_lora.switch_fraction=0.2
$PY examples/sft/modes_table.py runs/sft/modes/{full,lora,freeze,full_then_lora}
