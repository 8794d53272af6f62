"""The data-parallel side of online RL: which prompts a rank samples, and the few numbers of a rollout
that must be the whole batch's, not one rank's (reward normalisation, advantage whitening, the KL
that adapts β, the logged statistics).

Under `torchrun` every rank takes a contiguous slice of each rollout's prompts (the same global draw
on every rank, so the slices are disjoint and the union is what one process would sample), keeps
each prompt's group on itself, and trains on its own rows; the engine all-reduces the token counts
and DDP the gradients. One process: every method is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from chatforge.errors import ConfigError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def check_prompts(self, prompts_per_rollout: int) -> None:
        """ConfigError unless every rank can sample an equal share of each draw's prompts."""
        if prompts_per_rollout % self.world_size:
            raise ConfigError(f"rollout.prompts_per_rollout={prompts_per_rollout} does not split over {self.world_size} "
                              "processes: each samples an equal share of the prompts (a prompt's group stays on one process)")

    def share(self, items: list) -> list:
        """This rank's contiguous slice of a list every rank holds (its length a multiple of the world size)."""
        if len(items) % self.world_size:
            raise ValueError(f"{len(items)} items do not split over {self.world_size} processes")
        size = len(items) // self.world_size
        return items[self.rank * size : (self.rank + 1) * size]

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over the ranks (float64, one all-reduce)."""
        if not self.enabled:
            return [float(v) for v in values]
        packed = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        return packed.tolist()

    def max(self, value: float) -> float:
        if not self.enabled:
            return float(value)
        packed = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(packed, op=dist.ReduceOp.MAX)
        return float(packed.item())

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """The ranks' 1-D tensors of one length concatenated in rank order (= one process's order)."""
        if not self.enabled:
            return values
        parts = [torch.empty_like(values) for _ in range(self.world_size)]
        dist.all_gather(parts, values.contiguous())
        return torch.cat(parts)

    def gather_objects(self, obj) -> list:
        if not self.enabled:
            return [obj]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_sum(self, scalar: torch.Tensor) -> torch.Tensor:
        """A tensor summed over the ranks (one all-reduce; the tensor itself in one process)."""
        if not self.enabled:
            return scalar
        out = scalar.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out
