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

from chatforge.data import parsers
from chatforge.data.records import RecordError
from chatforge.errors import ChatforgeError

Prompt = list[dict[str, Any]] | Mapping[str, Any]


class Scorer(Protocol):
    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        """One float per (prompt, response) pair, higher is better; the lists have equal lengths."""
        ...


def prompt_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """The chat messages of a prompt (messages list, or a record's `prompt` / `messages` without a
    trailing assistant turn; `data.parsers.prompt_messages`), or a ChatforgeError."""
    try:
        return parsers.prompt_messages(prompt)
    except RecordError as exc:
        raise ChatforgeError(exc.detail) from None


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
