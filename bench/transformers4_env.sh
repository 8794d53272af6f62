#!/usr/bin/env bash
# transformers 4.x in its own environment, to check that chatforge's exports load there
# (tests/test_export.py::test_transformers_4_reads_the_export; docs/export.md). Safe to run again.
#
#     bash bench/transformers4_env.sh                    # creates ~/.cache/chatforge/venv-tf4 (outside the repo)
#     CHATFORGE_TF4_PYTHON=~/.cache/chatforge/venv-tf4/bin/python .venv/bin/python -m pytest -q tests/test_export.py
#
# torch is pinned to chatforge's version (installed first, so resolving transformers never pulls
# another torch); chatforge itself is not installed: the check loads exports with plain transformers.
set -euo pipefail

venv="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/chatforge/venv-tf4}"
python="${PYTHON:-python3}"
torch_pin="torch==2.13.0"
transformers_spec="${TRANSFORMERS_SPEC:-transformers==4.57.1}"
peft_spec="${PEFT_SPEC:-peft==0.17.1}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
"${pip[@]}" "$torch_pin"
"${pip[@]}" "$transformers_spec" "$peft_spec" "$torch_pin"
"$venv/bin/python" -c "import torch, transformers, peft; print('torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)"
echo "transformers 4 environment ready: $venv"
