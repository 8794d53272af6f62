#!/usr/bin/env bash
# ABAB: the same load against `chatforge serve` with --max-batch 1 (no shared decode steps) and 16 (the default),
# the model of docs/serving.md "lm-evaluation-harness" (runs/serve_lmeval/a_export). Results: runs/serve_lmeval/batching.log.
#     bash bench/serve_batching_load.sh
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=runs/serve_lmeval/batching.log
: > $out
for round in 1 2; do
  for mb in 1 16; do
    OMP_NUM_THREADS=1 .venv/bin/chatforge serve runs/serve_lmeval/a_export --port 8130 --max-batch $mb --log-level warning > runs/serve_lmeval/serve_mb$mb.log 2>&1 &
    pid=$!
    for i in $(seq 1 60); do curl -s -m 2 localhost:8130/health >/dev/null && break; sleep 2; done
    echo "== round $round max_batch $mb (load: $(cut -d' ' -f1-3 /proc/loadavg))" >> $out
    .venv/bin/python -m chatforge.serve.loadtest --url http://127.0.0.1:8130 --requests 32 --concurrency 16 --max-tokens 16 --stream-every 0 >> $out 2>&1
    curl -s localhost:8130/metrics | grep -E "^chatforge_(worker_rounds_total|batched_calls_total|generation_tokens_total)" >> $out
    kill $pid; wait $pid 2>/dev/null
  done
done
echo done >> $out
