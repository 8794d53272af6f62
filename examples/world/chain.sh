#!/usr/bin/env bash
# The task world's chain, tokenizer to evaluation, with the wall time of each stage
# (docs/world.md, "The chain"). Run from the repository root; writes under runs/world/.
#   bash examples/world/chain.sh            # world, tokenizer, pretrain, knowledge test, SFT
#   STAGES="rm dpo rest" bash examples/world/chain.sh   # later stages, after the first run
set -euo pipefail
CF=${CHATFORGE:-.venv/bin/chatforge}
PY=${PYTHON:-.venv/bin/python}
STAGES=${STAGES:-"world tokenizer pretrain knowledge sft"}
timed() {  # timed NAME COMMAND...: run, then print "NAME: N s"
    local name=$1 start
    shift
    start=$(date +%s)
    "$@" > "runs/world/$name.log" 2>&1
    echo "$name: $(( $(date +%s) - start )) s (log: runs/world/$name.log)"
}
mkdir -p runs/world
for stage in $STAGES; do
    case $stage in
        world) timed world "$CF" world write --out runs/world/data ;;
        tokenizer) timed tokenizer "$CF" tokenizer examples/world/tokenizer.yaml ;;
        pretrain) timed pretrain "$CF" pretrain examples/world/pretrain.yaml train.resume=never ;;
        knowledge) timed knowledge "$PY" examples/world/knowledge_by_split.py runs/world/pretrain/final runs/world/data --letters ;;
        sft) timed sft "$CF" sft examples/world/sft.yaml ;;
        rm) timed rm "$CF" rm examples/world/rm.yaml ;;
        dpo) timed dpo "$CF" dpo examples/world/dpo.yaml ;;
        rest) timed rest "$CF" rest examples/world/rest.yaml ;;
        *) echo "unknown stage $stage" >&2; exit 2 ;;
    esac
done
