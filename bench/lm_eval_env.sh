#!/usr/bin/env bash
# EleutherAI's lm-evaluation-harness in its own environment, for the interoperability check in
# docs/evaluation.md ("Evaluating a chatforge model with lm-evaluation-harness"). Safe to run again:
# it reuses the venv and installs only what is missing.
#
#     bash bench/lm_eval_env.sh                  # creates bench/.venv-lmeval (git-ignored)
#     bash bench/lm_eval_env.sh /tmp/venv-lmeval # elsewhere
#
# torch is pinned to chatforge's version (the CPU build this machine's pip finds) and installed first,
# so that resolving lm_eval never pulls another torch with its CUDA libraries. chatforge itself is not
# installed here: the harness reads the exported model directory with plain transformers.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-$here/.venv-lmeval}"
python="${PYTHON:-python3}"
torch_pin="torch==2.13.0"
lm_eval_spec="${LM_EVAL_SPEC:-lm_eval[hf,api]==0.4.13}"  # api: the local-completions model (docs/serving.md)

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
"${pip[@]}" "$torch_pin"
"${pip[@]}" "$lm_eval_spec" "$torch_pin"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
import torch, transformers
print("torch", torch.__version__, "| transformers", transformers.__version__, "| lm_eval", md.version("lm_eval"))
PY
echo "lm-evaluation-harness environment ready: $venv  (run: $venv/bin/lm_eval --help)"
