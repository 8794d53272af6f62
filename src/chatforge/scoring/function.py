"""A user function as a scorer, named by its dotted path ('package.module:function').

Per pair (`batched: false`):  fn(prompt, response, **kwargs) -> float
Batched  (`batched: true`):   fn(prompts, responses, **kwargs) -> list[float] (same length)

`prompt` is what the caller passed to `score`: in `chatforge bon`, the input record (a dict) with
its `prompt` field holding the prompt's messages (the other fields, e.g. `answer`, kept).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from chatforge.errors import ChatforgeError, ConfigError
from chatforge.scoring.base import Prompt, as_score, check_pairs
from chatforge.scoring.config import FunctionScorerConfig


def import_function(path: str) -> Callable:
    """The callable at 'package.module:function' (or 'package.module.function'); ConfigError if absent."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"scorer function: path {path!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"scorer function {path!r}: cannot import module {module_name!r} ({exc}); "
            "is it installed or on PYTHONPATH?"
        ) from None
    fn = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise ConfigError(
                f"scorer function {path!r}: module {module_name!r} has no attribute {attr!r}"
                + (f"; callables there: {', '.join(public[:12])}" if public else "")
            )
        fn = getattr(fn, part)
    if not callable(fn):
        raise ConfigError(f"scorer function {path!r}: {attr!r} is a {type(fn).__name__}, not a function")
    return fn


class FunctionScorer:
    def __init__(self, cfg: FunctionScorerConfig):
        self.path = cfg.path
        self.fn = import_function(cfg.path)
        self.batched = cfg.batched
        self.kwargs = dict(cfg.kwargs)

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        check_pairs(prompts, responses)
        if not self.batched:
            return [as_score(self.fn(p, r, **self.kwargs), f"scorer function {self.path}") for p, r in zip(prompts, responses)]
        out = self.fn(list(prompts), list(responses), **self.kwargs)
        try:
            out = list(out)
        except TypeError:
            raise ChatforgeError(f"scorer function {self.path} (batched): returned {type(out).__name__}, not a list") from None
        if len(out) != len(responses):
            raise ChatforgeError(
                f"scorer function {self.path} (batched): returned {len(out)} scores for {len(responses)} responses"
            )
        return [as_score(v, f"scorer function {self.path}") for v in out]
