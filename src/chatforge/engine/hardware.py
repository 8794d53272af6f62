"""Peak FLOP/s for the MFU estimate: a table for known GPUs, a short measurement on CPU."""

from __future__ import annotations

import time
from functools import lru_cache

import torch

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets.
_GPU_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}


def gpu_peak_tflops(device: torch.device) -> float | None:
    name = torch.cuda.get_device_name(device)
    for key, tflops in _GPU_BF16_TFLOPS.items():
        if key in name:
            return tflops
    return None


@lru_cache(maxsize=4)
def measured_matmul_tflops(size: int = 2048, trials: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Achieved TFLOP/s of a large square matmul on the CPU: the practical fp32 ceiling here.

    The best of several trials, so a burst of other load on the machine lowers it as little as possible.
    """
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)  # warm up threads and caches
    best = 0.0
    for _ in range(trials):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e12)
    return best


def peak_tflops(device: torch.device, configured: float | None) -> float | None:
    if configured is not None:
        return configured
    if device.type == "cuda":
        return gpu_peak_tflops(device)
    if device.type == "cpu":
        return measured_matmul_tflops()
    return None
