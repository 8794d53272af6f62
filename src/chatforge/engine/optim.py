"""AdamW with weight-decay groups."""

from __future__ import annotations

from collections.abc import Callable

import torch

from chatforge.engine.config import OptimConfig


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices; leave biases, norm gains and embeddings undecayed (GPT-3 / nanoGPT practice).

    Embeddings are excluded because decay pulls rare tokens' rows toward zero between their updates.
    """
    decay, no_decay = [], []
    seen: set[int] = set()
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        if param.ndim < 2 or id(param) in embedding_ids or "norm" in name.lower():
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: torch.nn.Module, cfg: OptimConfig, device: torch.device, groups: Callable | None = None
) -> torch.optim.Optimizer:
    """AdamW over `groups(model, weight_decay)` (default `parameter_groups`)."""
    kwargs: dict = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), "eps": cfg.eps}
    impl = cfg.implementation
    if impl == "auto":
        impl = "fused" if device.type in ("cuda", "cpu") else "foreach"
    if impl == "fused":
        kwargs["fused"] = True
    elif impl == "foreach":
        kwargs["foreach"] = True
    else:
        kwargs["foreach"] = False
    optimizer = torch.optim.AdamW((groups or parameter_groups)(model, cfg.weight_decay), **kwargs)
    if kwargs.get("fused"):
        optimizer.register_step_post_hook(_bump_versions)
    return optimizer


def _bump_versions(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """Fused AdamW writes the parameters in its kernel without bumping their version counters (foreach
    and SGD do). Anything that caches a function of the weights keyed on `_version`, such as the fast
    decoder's packed weights, would then keep serving the weights from before the step."""
    from torch.autograd.graph import increment_version

    for group in optimizer.param_groups:
        for param in group["params"]:
            increment_version(param)
