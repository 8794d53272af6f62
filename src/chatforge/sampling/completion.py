"""What the sampler returns for one sample (shared by the torch and vLLM backends)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["stop", "length"]


@dataclass
class Completion:
    """One sample for one prompt.

    `token_ids` end with the stop token when a stop id ended the sample (so RL trains the model to stop),
    or with the token that completed a stop string; `text` holds neither the stop token nor the stop
    string. `stop_reason` is the stop id or stop string that ended it, None for `finish_reason="length"`.
    """

    prompt_index: int
    token_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: FinishReason
    stop_reason: str | int | None
    # With `SamplingConfig.top_logprobs = k > 0`: per generated token, the k most likely (token id,
    # raw log-prob) pairs, most likely first; None otherwise.
    top_logprobs: list[list[tuple[int, float]]] | None = None


# on_token(prompt index, sample index, the sample's token ids so far, its Completion once it ended,
# the raw log-probs of those tokens, their top_logprobs alternatives or None): called by
# `Sampler.generate` after each decoding step (a stream, and its log-probs, are fed from it).
OnToken = Callable[[int, int, list[int], "Completion | None", list[float], "list[list[tuple[int, float]]] | None"], None]
