"""Peak FLOP/s for the MFU estimate (a table for known GPUs, a short measurement on CPU); peak memory."""

from __future__ import annotations

import os
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


class PeakMemory:
    """Peak memory of a stretch of work: CUDA's allocator peak on a GPU, the process's peak RSS on CPU.

    `start()` resets CUDA's peak counter (on CPU it notes the current RSS); `result()` gives
    `{"kind", "peak_bytes", "start_bytes"}`. RSS is the whole process (Python, libraries, data), so
    compare CPU runs by `peak_bytes - start_bytes`, the growth over what was resident when training
    began; it is exact only when the process never peaked higher before `start()`.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.start_bytes = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_bytes = torch.cuda.memory_allocated(self.device)
        else:
            self.start_bytes = current_rss_bytes()

    def result(self) -> dict:
        if self.device.type == "cuda":
            return {"kind": "cuda_allocated", "peak_bytes": torch.cuda.max_memory_allocated(self.device), "start_bytes": self.start_bytes}
        return {"kind": "process_rss", "peak_bytes": peak_rss_bytes(), "start_bytes": self.start_bytes}


def current_rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024
