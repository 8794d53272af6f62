"""OpenAI's `logprobs` objects built from the sampler's `Completion`s and the prompt's log-probs.

Every log-prob is the model's raw one (temperature 1, before penalties and filters), as the sampler
records it (docs/sampling.md): the same numbers whatever the sampling settings, like vLLM's default.
A sample that ended on a stop token (eos, end of turn) does not list it: the listed tokens are the
ones whose text is in the answer (a stop string's last token is listed, its text cut).
"""

from __future__ import annotations

from typing import Any

from chatforge.sampling import Completion
from chatforge.sampling.prompt_logprobs import PromptLogprobs
from chatforge.sampling.token_text import TokenText


def shown_tokens(completion: Completion) -> int:
    """How many of the sample's tokens the answer shows: all but a stop token that ended it."""
    return len(completion.token_ids) - (1 if isinstance(completion.stop_reason, int) else 0)


def shown(completion: Completion) -> list[tuple[int, float, list[tuple[int, float]]]]:
    """(id, raw log-prob, top alternatives) of each token the answer shows: what a stream sends too."""
    return [(completion.token_ids[t], completion.logprobs[t], completion.top_logprobs[t] if completion.top_logprobs else [])
            for t in range(shown_tokens(completion))]


def chat_entries(text: TokenText, tokens: list[tuple[int, float, list[tuple[int, float]]]]) -> list[dict[str, Any]]:
    """`[{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]`, one per token."""
    content = []
    for token_id, logprob, alternatives in tokens:
        entry = text.entry(token_id, logprob)
        entry["top_logprobs"] = [text.entry(i, lp) for i, lp in alternatives]
        content.append(entry)
    return content


def chat_logprobs(text: TokenText, completion: Completion) -> dict[str, Any]:
    """`{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}], "refusal": None}`."""
    return {"content": chat_entries(text, shown(completion)), "refusal": None}


def completion_chunk_logprobs(
    text: TokenText, tokens: list[tuple[int, float, list[tuple[int, float]]]], earlier_ids: list[int]
) -> dict[str, Any]:
    """A streamed `text_completion` chunk's logprobs: its tokens, with `text_offset` counted from the
    start of the choice's text (after `earlier_ids`, the tokens of the chunks before it)."""
    ids = [token_id for token_id, _, _ in tokens]
    return {
        "tokens": [text.string_of(i) for i in ids],
        "token_logprobs": [lp for _, lp, _ in tokens],
        "top_logprobs": [_top_dict(text, alt, i, lp) for i, lp, alt in tokens],
        "text_offset": char_offsets(text.tokenizer, ids, prefix_ids=earlier_ids),
    }


def char_offsets(tokenizer, ids: list[int], start: int = 0, prefix_ids: list[int] = ()) -> list[int]:
    """Where each token's text begins: `start` + the length of the text of prefix_ids + ids[:j], for each j.

    The prefix is decoded together with the tokens, not measured apart: a streamed chunk can start
    inside a UTF-8 character whose first bytes closed the chunk before (alone they decode to U+FFFD)."""
    prefix = list(prefix_ids)
    return [start + len(tokenizer.decode(prefix + ids[:j], skip_special_tokens=True)) for j in range(len(ids))]


def completion_logprobs(
    text: TokenText, completion: Completion, echo: PromptLogprobs | None = None,
    prompt_ids: list[int] | None = None, prompt_text: str = "",
) -> dict[str, Any]:
    """`{"tokens", "token_logprobs", "top_logprobs", "text_offset"}` of a `text_completion` choice.

    With `echo` (the prompt's `PromptLogprobs`), the prompt's tokens come first; the first has no
    log-prob (null) and no alternatives (null). Each `top_logprobs` item maps token strings to
    log-probs: the most likely ones (as many as were asked for) plus the chosen token (OpenAI: "up to logprobs + 1 elements").
    `text_offset` counts characters of the choice's `text` (prompt text first when echoed).
    """
    shown = shown_tokens(completion)
    ids = completion.token_ids[:shown]
    tokens, logprobs, tops, offsets = [], [], [], []
    if echo is not None and prompt_ids is not None:
        tokens += [text.string_of(i) for i in prompt_ids]
        logprobs += list(echo.logprobs)
        tops += [None if alt is None else _top_dict(text, alt, chosen, lp)
                 for alt, chosen, lp in zip(echo.top, prompt_ids, echo.logprobs)]
        offsets += char_offsets(text.tokenizer, prompt_ids)
    tokens += [text.string_of(i) for i in ids]
    logprobs += completion.logprobs[:shown]
    alternatives = completion.top_logprobs or [[] for _ in ids]
    tops += [_top_dict(text, alt, chosen, lp) for alt, chosen, lp in zip(alternatives, ids, completion.logprobs)]
    offsets += char_offsets(text.tokenizer, ids, start=len(prompt_text))
    return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}


def _top_dict(text: TokenText, alternatives: list[tuple[int, float]], chosen: int, logprob: float) -> dict[str, float]:
    out = {text.string_of(i): lp for i, lp in alternatives}
    out.setdefault(text.string_of(chosen), logprob)
    return out
