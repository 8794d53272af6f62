#!/usr/bin/env bash
# Does cleaning help? Pretrain the same model for the same steps and tokens on the cleaned pages and
# on the raw pages, and score both on held-out clean prose (bits per byte). docs/data_cleaning.md.
#   bash examples/clean/clean_vs_raw/run.sh
set -euo pipefail
D=examples/clean/clean_vs_raw
test -f runs/clean/world/web/pages.jsonl || chatforge world write --out runs/clean/world
chatforge clean $D/clean.yaml
chatforge clean $D/raw.yaml
test -f runs/clean_vs_raw/tokenizer/tokenizer.json || chatforge tokenizer $D/tokenizer.yaml
for side in clean raw; do
  test -f runs/clean_vs_raw/pretrain_$side/final/config.json || chatforge pretrain $D/pretrain_$side.yaml
  chatforge eval-lm model=runs/clean_vs_raw/pretrain_$side/final \
    "data=[{path: runs/clean/world/pretrain/general_valid.jsonl}]" out=runs/clean_vs_raw/heldout_$side.json
done
python examples/clean/clean_vs_raw/compare.py runs/clean_vs_raw/pretrain_clean/final \
  runs/clean_vs_raw/pretrain_raw/final runs/clean/world/pretrain/general_valid.jsonl
