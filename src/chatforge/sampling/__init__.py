"""The one generation path (Best-of-N, ReST-EM, online RL, evaluation, serving); see docs/sampling.md."""

from chatforge.sampling.config import SamplingConfig
from chatforge.sampling.sampler import (
    Completion,
    Sampler,
    chat_prompt,
    choose_tokens,
    filter_logits,
    find_stop,
    max_positions,
)

__all__ = ["Completion", "Sampler", "SamplingConfig", "chat_prompt", "choose_tokens", "filter_logits", "find_stop", "max_positions"]
