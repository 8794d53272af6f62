#!/usr/bin/env bash
# The data<->model loop (seed 000): a model trained on the cleaned corpus scores that corpus
# (perplexity) and a quality classifier trained on the cleaning labels scores it too; the pipeline
# re-selects with both; the same model is trained again for the same steps and tokens; both models
# are scored on held-out clean prose (paired per-document bits-per-byte). docs/data_cleaning.md.
#   bash examples/clean/clean_vs_raw/run.sh && bash examples/clean/loop/run.sh
set -euo pipefail
python -m chatforge.clean.quality runs/clean_vs_raw/clean runs/loop/quality.pt
chatforge clean examples/clean/loop/reclean.yaml
test -f runs/loop/pretrain1/final/config.json || chatforge pretrain examples/clean/loop/pretrain1.yaml
python examples/clean/clean_vs_raw/compare.py runs/clean_vs_raw/pretrain_clean/final runs/loop/pretrain1/final \
  runs/clean/world/pretrain/general_valid.jsonl
