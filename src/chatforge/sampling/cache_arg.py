"""The name under which a model's forward takes its KV cache.

transformers 5.x renamed `past_key_values` to `cache` (the old name warns and goes in 5.40); the
locked version takes `cache`, older 5.x releases only `past_key_values`. Asking the forward's own
signature keeps decoding right on both without a version table.
"""

from __future__ import annotations

import inspect
from functools import cache as _memo

import torch


def cache_kwargs(model: torch.nn.Module, kv_cache) -> dict:
    """`{name: kv_cache}` for `model(...)`, `name` being what this model's forward accepts."""
    return {_cache_parameter(type(_unwrapped(model))): kv_cache}


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    # A PEFT model's forward is `(*args, **kwargs)`; the wrapped transformers model names the argument.
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@_memo
def _cache_parameter(model_class: type) -> str:
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"
