"""The one interface for whatever scores a response, and how a prompt is read.

A prompt is either a list of chat messages or a record (a dict) holding them: in `prompt` (the
world's verifiable and preference records), or in `messages` (a conversation; a trailing assistant
turn, the reference answer, is not part of the prompt). Scorers that need more than the messages
(the world checker needs `task` and `answer`; the safety gate reads `unsafe`/`task`) read it from
the record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from chatforge.errors import ChatforgeError

Prompt = list[dict[str, Any]] | Mapping[str, Any]


class Scorer(Protocol):
    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        """One float per (prompt, response) pair, higher is better; the lists have equal lengths."""
        ...


def prompt_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """The chat messages of a prompt (messages list, or a record's `prompt` / `messages` without a
    trailing assistant turn)."""
    if isinstance(prompt, Mapping):
        if "prompt" in prompt:
            inner = prompt["prompt"]
            if isinstance(inner, str):
                return [{"role": "user", "content": inner}]
            return prompt_messages(inner)
        if "messages" in prompt:
            messages = prompt_messages(prompt["messages"])
            return messages[:-1] if messages and messages[-1].get("role") == "assistant" else messages
        raise ChatforgeError(f"record {prompt.get('id', '?')}: needs a 'prompt' or 'messages' field")
    if not isinstance(prompt, list) or not prompt or not all(isinstance(m, Mapping) for m in prompt):
        raise ChatforgeError(f"a prompt must be a non-empty list of messages or a record, got {type(prompt).__name__}")
    return [dict(m) for m in prompt]


def check_pairs(prompts: Sequence[Prompt], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise ChatforgeError(f"score: {len(prompts)} prompts but {len(responses)} responses; give one response per prompt")


def as_score(value: Any, where: str) -> float:
    """`value` as a finite float, or a ChatforgeError naming `where`."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ChatforgeError(f"{where}: returned {value!r}, not a number") from None
    if not math.isfinite(out):
        raise ChatforgeError(f"{where}: returned {out}, not a finite number")
    return out
