#!/usr/bin/env bash
# C-RLFT vs plain SFT on the same mixed-quality data vs SFT on the expert half alone, each from the
# same base model and for every seed; then greedy exact match of every run on the held-out
# instructions, one line per question (crlft_score.py), and the table of docs/sft.md ("C-RLFT").
#
#   bash examples/sft/crlft_compare.sh                       # the docs table: format-4 world, 3 seeds
#   WORLD=runs/w5/data BASE=runs/w5/pt1200/final OUT=runs/crlft4 SEEDS="1 2 3" STEPS=400 JOBS=2 \
#       bash examples/sft/crlft_compare.sh
#   ARMS=crlft NAME=crlft_exp CRLFT="{weighting: exp}" bash examples/sft/crlft_compare.sh   # a variant arm
#   SUBSET=disagree OUT=runs/crlft4/disagree STEPS=200 ARMS="plain crlft" SEEDS=1 bash examples/sft/crlft_compare.sh
#   DIAGNOSE=1 ARMS="plain crlft" bash examples/sft/crlft_compare.sh    # + sampled and novice-condition scores
#
# WORLD is a `chatforge world write` directory (format 4: its letter tasks are learnt by SFT), BASE
# a model pretrained on it (docs/world_learnability.md, "Format 4"). Runs already finished (final/ and
# score.jsonl present) are skipped, so an interrupted comparison resumes. OMP_NUM_THREADS=1 per run:
# JOBS runs share the machine's cores.
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
WORLD=${WORLD:-runs/w5/data}
BASE=${BASE:-runs/w5/pt1200/final}
OUT=${OUT:-runs/crlft4}
SEEDS=${SEEDS:-"1 2 3"}
STEPS=${STEPS:-400}
JOBS=${JOBS:-2}
ARMS=${ARMS:-"plain crlft expert"}
CRLFT=${CRLFT:-"{}"}  # the crlft= override of the crlft arm (OpenChat's code: rewards expert 1.0, novice 0.1)
NAME=${NAME:-}        # run-name prefix of the crlft arm (default: crlft), to keep variants apart
N_EVAL=${N_EVAL:-314}
# SUBSET=disagree: only the prompts the novice answers wrongly, each with both answers (half the
# answers wrong, where the full set has a quarter wrong), to see C-RLFT where the errors are no minority.
SUBSET=${SUBSET:-all}
MIXED=$WORLD/mixed_quality/train.jsonl
[ "$SUBSET" = all ] || MIXED=$OUT/mixed.jsonl
export PY WORLD BASE OUT STEPS CRLFT NAME N_EVAL MIXED

mkdir -p "$OUT"
# The training sets: the world's mixed-quality file (or its disagree subset) and its expert half
# (the same prompts, only the always-right answers).
$PY examples/sft/crlft_score.py subset "$WORLD/mixed_quality/train.jsonl" "$SUBSET" "$OUT/mixed.jsonl" "$OUT/expert_only.jsonl"

run_one() {  # ARM SEED: train (unless finished), then score (unless scored)
    local arm=$1 seed=$2 data=$MIXED extra=() name=$1
    case $arm in
        plain) ;;
        expert) data=$OUT/expert_only.jsonl ;;
        crlft) extra=("crlft=$CRLFT"); name=${NAME:-crlft} ;;
        *) echo "unknown arm $arm" >&2; return 1 ;;
    esac
    local run=$OUT/${name}_s$seed
    # The format-4 SFT recipe (runs/w5/sft1200_mix): lr 1e-3, 16 rows of 256, 20% of rows from the
    # pretraining mix; STEPS=400 is ~9 epochs of the 2,000 mixed-quality conversations.
    if [ ! -f "$run/final/chatforge_complete.json" ]; then
        OMP_NUM_THREADS=1 $PY -m chatforge sft examples/world/sft.yaml out="$run" model="$BASE" \
            train.max_steps="$STEPS" train.seed="$seed" eval=null "data.sources=[{path: $data}]" \
            "data.pretrain_mix={sources: [{path: $WORLD/pretrain/world_a_train.jsonl, weight: 0.5}, {path: $WORLD/pretrain/world_a_qa.jsonl, weight: 0.2}, {path: $WORLD/pretrain/arithmetic_train.jsonl, weight: 0.1}, {path: $WORLD/pretrain/letters_train.jsonl, weight: 0.2}], fraction: 0.2}" \
            "${extra[@]}" > "$run.log" 2>&1
    fi
    if [ ! -f "$run/score.jsonl" ]; then
        OMP_NUM_THREADS=1 $PY examples/sft/crlft_score.py score "$run/final" "$WORLD/instructions/test.jsonl" \
            --n "$N_EVAL" --out "$run/score.jsonl" >> "$run.log" 2>&1
    fi
    echo "done $run"
}
export -f run_one

for seed in $SEEDS; do for arm in $ARMS; do echo "$arm $seed"; done; done | xargs -P "$JOBS" -L 1 bash -c 'run_one $0 $1'
$PY examples/sft/crlft_score.py table "$OUT"

# DIAGNOSE=1: on reverse + sort_letters (the novice's copy error), 4 samples per question at
# temperature 1 for plain and C-RLFT runs, and the C-RLFT runs asked as the novice (greedy).
if [ "${DIAGNOSE:-0}" = 1 ]; then
    diagnose_one() {
        local run=$OUT/$1_s$2 test=$WORLD/instructions/test.jsonl
        [ -f "$run/sampled.jsonl" ] || OMP_NUM_THREADS=1 $PY examples/sft/crlft_score.py score "$run/final" "$test" \
            --n "$N_EVAL" --tasks reverse,sort_letters --temperature 1 --samples 4 --seed "$2" --out "$run/sampled.jsonl" >> "$run.log" 2>&1
        if [ "$1" = "${NAME:-crlft}" ] && [ ! -f "$run/novice.jsonl" ]; then
            OMP_NUM_THREADS=1 $PY examples/sft/crlft_score.py score "$run/final" "$test" --n "$N_EVAL" \
                --tasks reverse,sort_letters --condition novice --out "$run/novice.jsonl" >> "$run.log" 2>&1
        fi
    }
    export -f diagnose_one
    for seed in $SEEDS; do for arm in plain "${NAME:-crlft}"; do echo "$arm $seed"; done; done \
        | xargs -P "$JOBS" -L 1 bash -c 'diagnose_one $0 $1'
    $PY examples/sft/crlft_score.py table "$OUT" --file sampled.jsonl
    $PY examples/sft/crlft_score.py table "$OUT" --file novice.jsonl
fi
