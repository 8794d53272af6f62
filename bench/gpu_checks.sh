#!/usr/bin/env bash
# The GPU path's checks (issue 23): tests/test_gpu.py on the device, then a short bench/gpu_mfu.py run.
#
#     bash bench/gpu_checks.sh                 # on a GPU machine: checks on cuda, then MFU (llama-125m, llama-1b)
#     bash bench/gpu_checks.sh --device cpu    # the same checks on CPU, and gpu_mfu.py --device cpu --tiny:
#                                              # proves the scripts work where there is no GPU
#
# Without CUDA and without --device cpu every check is skipped (pytest says why) and the MFU step
# says there is nothing to measure; the script still exits 0. Logs and JSON go to ${OUT:-runs/gpu_checks}.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
python="${PYTHON:-.venv/bin/python}"
device=cuda
if [ "${1:-}" = "--device" ]; then device="${2:?--device needs a value}"; fi
out="${OUT:-runs/gpu_checks}"
mkdir -p "$out"

"$python" - <<'PY'
import torch, transformers
cuda = torch.cuda.is_available()
print("torch", torch.__version__, "| transformers", transformers.__version__, "| cuda", cuda,
      "|", torch.cuda.get_device_name(0) if cuda else "no GPU")
try:
    import vllm  # noqa: F401
    print("vllm: installed")
except ImportError:
    print("vllm: not installed (its backend is not checked here)")
PY

CHATFORGE_CHECK_DEVICE="$device" "$python" -m pytest -q -p no:cacheprovider tests/test_gpu.py -rs 2>&1 | tee "$out/checks_$device.log"
checks=${PIPESTATUS[0]}

if [ "$device" = cpu ]; then
    "$python" bench/gpu_mfu.py --device cpu --tiny --json "$out/mfu_cpu_tiny.json" 2>&1 | tee "$out/mfu_cpu_tiny.log"
else
    "$python" bench/gpu_mfu.py --device "$device" --json "$out/mfu_$device.json" 2>&1 | tee "$out/mfu_$device.log"
fi
mfu=${PIPESTATUS[0]}
echo "checks exit $checks, gpu_mfu exit $mfu (logs in $out/)"
exit $(( checks != 0 || mfu != 0 ))
