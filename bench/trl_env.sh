#!/usr/bin/env bash
# The benchmark's own environment for bench/sft_vs_trl.py: TRL and its dependencies, kept out of
# chatforge's. Safe to run again: it reuses the venv and installs only what is missing.
#
#     bash bench/trl_env.sh                 # creates bench/.venv-trl (git-ignored)
#     bash bench/trl_env.sh /tmp/venv-trl   # elsewhere; then pass --trl-python /tmp/venv-trl/bin/python
#
# torch is pinned to chatforge's version (the CPU build this machine's pip finds) and installed first,
# so that resolving trl never pulls another torch with its CUDA libraries. The TRL side of the benchmark needs only
# trl, transformers and datasets: chatforge itself is not installed here.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-$here/.venv-trl}"
python="${PYTHON:-python3}"
torch_pin="torch==2.13.0"
trl_spec="${TRL_SPEC:-trl==1.16.0}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
"${pip[@]}" --upgrade pip
"${pip[@]}" "$torch_pin"
"${pip[@]}" "$trl_spec" "$torch_pin" datasets
"$venv/bin/python" - <<'PY'
import datasets, torch, transformers, trl
print("torch", torch.__version__, "| transformers", transformers.__version__, "| trl", trl.__version__, "| datasets", datasets.__version__)
PY
echo "TRL environment ready: $venv"
