"""No progress bar from transformers' own loading and saving of weights.

transformers 5 draws a tqdm bar each time it loads a model ("Loading weights") or writes one
("Writing model shards"): a recipe loads models dozens of times (the smoke recipe 52), and the bars
buried the stage's own progress. chatforge's bars (training, sampling, eval) are its own tqdm
instances and are not affected.

The switch is transformers' tqdm hook (`transformers.utils.logging.set_tqdm_hook`): every bar
transformers creates is created with `disable=True`. It is used instead of
`transformers.utils.logging.disable_progress_bar()`, which also turns off huggingface_hub's download
bars for the whole process and, turned back on, re-enables them even where the user had disabled them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def _disabled(factory: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return factory(*args, **{**kwargs, "disable": True})


@contextmanager
def quiet_transformers_bars() -> Iterator[None]:
    """transformers creates no visible progress bar inside the block; the previous hook comes back after."""
    from transformers.utils.logging import set_tqdm_hook

    previous = set_tqdm_hook(_disabled)
    try:
        yield
    finally:
        set_tqdm_hook(previous)
