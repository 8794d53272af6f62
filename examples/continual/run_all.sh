#!/usr/bin/env bash
# The three regimes of continued pretraining on the task world, and the forgetting table.
#   D1 = world A, D2 = world B (disjoint facts; see docs/world.md)
#   1. pretrain on D1                       a.yaml
#   2. continue on D2 (4 variants)          b_continue*.yaml  (replay 0 / 5%, re-warm or not)
#   3. retrain from scratch on D1 u D2      ab_retrain.yaml
# Run from the repository root:  bash examples/continual/run_all.sh      (~25 min on 2 CPU cores)
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
$PY -m chatforge world write --out runs/continual/world --size small > /dev/null
$PY -m chatforge tokenizer examples/continual/tokenizer.yaml
for regime in a b_continue b_continue_replay b_continue_norewarm b_continue_replay_norewarm ab_retrain; do
  echo "=== $regime"
  $PY -m chatforge pretrain "examples/continual/$regime.yaml" train.progress=false
done
$PY examples/continual/table.py runs/continual | tee runs/continual/table.md
