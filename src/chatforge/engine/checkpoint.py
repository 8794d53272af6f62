"""Resumable checkpoints with atomic writes.

checkpoints/
  step_000100/   model.safetensors   full (unsharded) model state, safetensors
                 optimizer.pt        full optimizer state keyed by parameter name (torch.save, loaded weights_only)
                 trainer_state.pt    step, counters, data position, RNG states, model shape
  latest         name of the newest complete checkpoint

A checkpoint is written to a hidden temporary directory and renamed into place only when every file
is on disk, and `latest` is replaced atomically after that, so a crash mid-write leaves the previous
checkpoint intact. Old checkpoints beyond `keep_last` are removed after the new one is in place.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from chatforge.atomic_dir import fsync_dir, fsync_file
from chatforge.engine.distributed import DistInfo, barrier
from chatforge.errors import CheckpointError

_STEP_DIR = re.compile(r"^step_(\d+)$")


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_meta": list(np.random.get_state()[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    pos, has_gauss, cached = state["numpy_meta"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def model_shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    """Full parameter shapes on every rank, without gathering: an FSDP2 DTensor's shape is the global one.

    (A full state dict with cpu_offload is gathered to rank 0 only; the other ranks get an empty dict.)
    """
    return {name: list(t.shape) for name, t in get_model_state_dict(model).items()}


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def save_checkpoint(
    ckpt_root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    info: DistInfo,
    keep_last: int,
) -> Path | None:
    """Write step_<step>/ atomically on rank 0; every rank must call it (state is gathered)."""
    model_sd = get_model_state_dict(model, options=_FULL)
    optim_sd = get_optimizer_state_dict(model, optimizer, options=_FULL)
    final = ckpt_root / f"step_{step:06d}"
    if info.is_main:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        tmp = ckpt_root / f".tmp-step_{step:06d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file(_unshare(model_sd), str(tmp / "model.safetensors"))
        torch.save(optim_sd, tmp / "optimizer.pt")
        torch.save({"rng": rng_state(), **trainer_state}, tmp / "trainer_state.pt")  # a caller may pass its own "rng"
        for f in tmp.iterdir():
            fsync_file(f)
        fsync_dir(tmp)
        if final.exists():  # re-saving a step (e.g. the end of a resumed run): replace it whole
            trash = ckpt_root / f".old-{final.name}-{os.getpid()}"
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, final)
        latest_tmp = ckpt_root / f".latest-{os.getpid()}"
        latest_tmp.write_text(final.name + "\n")
        os.replace(latest_tmp, ckpt_root / "latest")
        fsync_dir(ckpt_root)
        _prune(ckpt_root, keep_last)
    barrier(info)
    return final if info.is_main else None


def _unshare(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share storage (tied embeddings): store a copy of each alias."""
    seen: set[int] = set()
    out = {}
    for name, tensor in state.items():
        ptr = tensor.untyped_storage().data_ptr()
        out[name] = tensor.detach().clone().contiguous() if ptr in seen else tensor.detach().contiguous()
        seen.add(ptr)
    return out


def share_tied(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Point the names of one tied parameter at one tensor again.

    A gathered (FSDP2) or CPU-offloaded full state dict holds a separate copy per name, so
    `save_pretrained`, which finds ties by shared storage, would store a tied embedding twice.
    """
    first: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) not in first:
            first[id(param)] = name
        elif name in state and first[id(param)] in state:
            state[name] = state[first[id(param)]]
    return state


def _prune(ckpt_root: Path, keep_last: int) -> None:
    steps = sorted(list_checkpoints(ckpt_root))
    for step in steps[:-keep_last]:
        shutil.rmtree(ckpt_root / f"step_{step:06d}", ignore_errors=True)
    for stale in ckpt_root.glob(".tmp-*"):  # left by a crash mid-write
        shutil.rmtree(stale, ignore_errors=True)


def list_checkpoints(ckpt_root: Path) -> list[int]:
    if not ckpt_root.is_dir():
        return []
    steps = []
    for child in ckpt_root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / "trainer_state.pt").is_file() and (child / "model.safetensors").is_file():
            steps.append(int(match.group(1)))
    return sorted(steps)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    pointer = ckpt_root / "latest"
    if pointer.is_file():
        candidate = ckpt_root / pointer.read_text().strip()
        if (candidate / "trainer_state.pt").is_file():
            return candidate
    steps = list_checkpoints(ckpt_root)
    return ckpt_root / f"step_{steps[-1]:06d}" if steps else None


def check_shapes(ckpt: Path, model: torch.nn.Module) -> None:
    """Fail with the first mismatching parameter rather than a wall of load_state_dict errors."""
    expected = model_shapes(model)
    path = ckpt / "model.safetensors"
    try:
        with safe_open(str(path), framework="pt") as fh:
            saved = {key: list(fh.get_slice(key).get_shape()) for key in fh.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]} "
            "(was it written for another model preset or architecture?)"
        )
    for name, shape in expected.items():
        if saved[name] != shape:
            raise CheckpointError(
                f"{path}: parameter {name!r} has shape {saved[name]} but the model has {shape} "
                "(was it written for another model preset or config override?)"
            )


def load_model_weights(ckpt: Path, model: torch.nn.Module) -> None:
    from safetensors.torch import load_file

    check_shapes(ckpt, model)
    state = load_file(str(ckpt / "model.safetensors"))
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=True))


def load_checkpoint(ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model and optimizer in place; return the trainer state (RNG already restored)."""
    load_model_weights(ckpt, model)
    try:
        optim_sd = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
        trainer_state = torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{ckpt}: cannot read optimizer or trainer state ({exc})") from None
    set_optimizer_state_dict(model, optimizer, optim_sd, options=StateDictOptions(full_state_dict=True))
    set_rng_state(trainer_state.pop("rng"))
    return trainer_state
