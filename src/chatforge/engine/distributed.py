"""Process group setup and data parallelism, applied from outside the model.

Single process by default. Under `torchrun`, `init()` joins the process group (gloo on CPU,
nccl on CUDA) and `wrap()` applies DDP or FSDP2 (`fully_shard` on each decoder block, then the
root). Model code never branches on world size.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init(device_pref: str = "auto") -> tuple[DistInfo, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_pref == "auto":
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_pref)
        if device.type == "cuda" and device.index is None:
            device = torch.device(f"cuda:{local}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            # device_id binds this rank to its GPU, so barriers never guess the device.
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
        atexit.register(shutdown)  # stages return without tearing down; leave the group cleanly
    return DistInfo(rank, world, local), device


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def decoder_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated transformer blocks of a `transformers` causal LM (the FSDP2 sharding unit)."""
    names = getattr(model, "_no_split_modules", None) or []
    return [m for m in model.modules() if type(m).__name__ in names]


def wrap(model: torch.nn.Module, mode: str, info: DistInfo, device: torch.device) -> torch.nn.Module:
    if not info.enabled:
        return model
    if mode == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for block in decoder_blocks(model):
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain `transformers` model under DDP and torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def backend() -> str:
    return str(dist.get_backend()) if dist.is_initialized() else "none"


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def main_process_first(info: DistInfo) -> Iterator[None]:
    """Rank 0 runs the block first (tokenizer training, tokenization into a shared cache); the
    other ranks wait, then run it and find the result on disk instead of redoing the work."""
    if info.enabled and not info.is_main:
        barrier(info)
    yield
    if info.enabled and info.is_main:
        barrier(info)
