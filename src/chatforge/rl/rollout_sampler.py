"""The sampler each rollout draws from, and, with `rollout.sampling.backend: vllm`, keeping vLLM's weights current.

torch backend: a new `Sampler` on the live policy per rollout (its fast decoder packs the weights as they are
now), as before. vllm backend: vLLM's offline `LLM` loads weights only from a directory, so before a rollout
whose policy weights differ from those vLLM last loaded, the policy is saved as a Hugging Face directory
(safetensors and the tokenizer) into the run's `vllm_policy/` and the engine is rebuilt from it. Why not push
tensors into the running engine: the ways to do that (`collective_rpc` with a worker extension, or reaching the
worker's model for `load_weights`) go through vLLM's internal worker classes, which change between vLLM
versions; `LLM(model=DIR)` is the documented constructor. It costs an engine start per rollout, not a wrong
rollout. "Changed" is judged by a digest of the weights' bytes: fused AdamW updates in place without bumping
a parameter's `_version`, so version counters would miss a step.

A LoRA policy is refused: vLLM would need the merged weights (or the adapter as a LoRA request), not wired.
"""

from __future__ import annotations

import gc
import hashlib
from pathlib import Path

import torch

from chatforge.errors import ConfigError


def weights_digest(model: torch.nn.Module) -> str:
    """blake2b of every state_dict tensor's name, dtype, shape and bytes: equal exactly when the weights are."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1).contiguous().cpu()
        h.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def vllm_export_dir(out_dir: Path, ranks) -> Path:
    """The run-local directory vLLM loads the policy from; one per rank under torchrun (each rank its own engine)."""
    return Path(out_dir) / ("vllm_policy" if ranks.world_size == 1 else f"vllm_policy_rank{ranks.rank}")


class RolloutSampler:
    """`sampler(policy)`: the `Sampler` for the next rollout (module docstring)."""

    def __init__(self, tokenizer, backend: str, export_dir: Path):
        self.tokenizer, self.backend, self.export_dir = tokenizer, backend, Path(export_dir)
        self._sampler = None
        self._digest: str | None = None  # of the weights vLLM last loaded
        self.reloads = 0  # engines built (logged, and what the tests count)

    def sampler(self, policy: torch.nn.Module):
        from chatforge.sampling.sampler import Sampler

        if self.backend != "vllm":
            return Sampler(policy, self.tokenizer)
        if hasattr(policy, "disable_adapter"):
            raise ConfigError("rollout.sampling.backend=vllm with a LoRA policy is not wired (vLLM would need the merged "
                              "weights); use backend=torch or full fine-tuning")
        digest = weights_digest(policy)
        if self._sampler is None or digest != self._digest:
            self._sampler = None  # drop the old engine before the new one claims the GPU
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.export_dir.mkdir(parents=True, exist_ok=True)
            policy.save_pretrained(self.export_dir, safe_serialization=True)
            self.tokenizer.save_pretrained(self.export_dir)
            self._sampler = Sampler(policy, self.tokenizer, model_path=str(self.export_dir))
            self._digest = digest
            self.reloads += 1
        return self._sampler
