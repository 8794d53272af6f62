"""Left truncation of a group of answers to one prompt (a DPO pair, a reward model's ranking).

The answers of a group are compared with each other, so each must be conditioned on the same
prompt tokens. Cutting each rendered conversation to its own last `max_length` tokens would cut a
longer answer's prompt more than a shorter one's, and once a prompt is used up it would cut the
answer's first tokens, which are then silently not scored. Instead the same prompt prefix is cut
from every member: as many tokens as the longest conversation is over `max_length`; a group whose
longest answer does not fit even with the whole prompt cut is not read (the caller rejects it).
"""

from __future__ import annotations

from collections.abc import Sequence


def shared_left_cut(rows: Sequence[Sequence[int]], prompt_tokens: int, max_length: int) -> int | None:
    """How many leading tokens to drop from every row so the longest fits in `max_length`.

    `rows` are rendered conversations whose first `prompt_tokens` tokens are the same prompt;
    0 when all fit; None when the cut would reach into an answer (the group cannot be kept).
    """
    cut = max(len(r) for r in rows) - max_length
    if cut <= 0:
        return 0
    if cut > prompt_tokens or any(list(r[:cut]) != list(rows[0][:cut]) for r in rows[1:]):
        return None
    return cut


def shared_prompt_tokens(rows: Sequence[Sequence[int]], answer_starts: Sequence[int]) -> int:
    """The prompt prefix the rows share: up to the earliest answer start, and only tokens equal in all rows."""
    limit = min(answer_starts)
    first = rows[0]
    for i in range(limit):
        if any(r[i] != first[i] for r in rows[1:]):
            return i
    return limit
