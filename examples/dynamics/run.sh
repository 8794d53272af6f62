#!/usr/bin/env bash
# Learning dynamics of off-policy DPO on the task world, plain vs the squeezing mitigation
# (docs/dynamics.md). Needs the world (runs/continual/world) and the SFT model
# (runs/sft/world_full_lr1e-3/final, docs/sft.md). ~1 h on 2 heavily shared CPU cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
# (a) SFT model -> DPO, probes every 5 steps
chatforge dpo examples/dynamics/dpo_plain.yaml train.progress=false
# (b) SFT model -> SFT on chosen AND rejected answers -> DPO, probes every 10 steps
python examples/dynamics/both_answers.py runs/continual/world/preferences/pairs_train.jsonl runs/dynamics/sft_both.jsonl
chatforge sft examples/dynamics/sft_both.yaml train.progress=false
chatforge dpo examples/dynamics/dpo_after_both.yaml train.progress=false
# (c) control: the same extra SFT on the chosen answers only -> DPO
python examples/dynamics/both_answers.py --chosen-only runs/continual/world/preferences/pairs_train.jsonl runs/dynamics/sft_chosen.jsonl
chatforge sft examples/dynamics/sft_chosen.yaml train.progress=false
chatforge dpo examples/dynamics/dpo_after_chosen.yaml train.progress=false
# the figure and the table of docs/dynamics.md
python examples/dynamics/compare.py runs/dynamics/dpo_plain runs/dynamics/dpo_after_both runs/dynamics/dpo_after_chosen \
    --labels "SFT->DPO" "SFT->SFT(both)->DPO" "SFT->SFT(chosen)->DPO" --png docs/img/dynamics_dpo.png
cp runs/dynamics/dpo_plain/report/dynamics.png docs/img/dynamics_dpo_plain.png
