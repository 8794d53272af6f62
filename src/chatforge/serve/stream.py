"""Token-by-token text for streamed responses (`stream: true`) and the chat REPL.

There is one decoding loop, the sampler's: `IncrementalDecoder` runs `Sampler.generate` on one prompt
with an `on_token` callback, so a stream gets exactly the tokens, stop handling and log-probs of a
non-streamed call with the same settings (tested token for token, seeded draws included).

Text is emitted as soon as it is final: the decoder re-decodes each sample's tokens after every step
and sends the new characters, holding back a trailing partial UTF-8 character ("\\ufffd") and any
tail that could still grow into a stop string, so the concatenated deltas equal the finished text.
"""

from __future__ import annotations

from collections.abc import Callable

from chatforge.sampling import Completion, SamplingConfig, max_positions

# (sample index, new text, finish reason or None); called from the decoding thread.
OnDelta = Callable[[int, str, "str | None"], None]


def held_back(text: str, stops: list[str]) -> int:
    """Characters at the end of `text` not safe to send yet: a partial character or a stop string's start."""
    hold = 1 if text.endswith("\ufffd") else 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    return hold


class IncrementalDecoder:
    """Streams `cfg.n` samples of one prompt from the sampler's own decoding loop (`Sampler.generate`
    with `on_token`): the same forwards, token choice, stop rules and log-probs as a non-streamed call."""

    def __init__(self, model, tokenizer, sampler=None):
        from chatforge.sampling import Sampler

        self.model = model
        self.tokenizer = tokenizer
        self.sampler = sampler if sampler is not None else Sampler(model, tokenizer)  # share the server's

    def generate(
        self,
        prompt_ids: list[int],
        cfg: SamplingConfig,
        on_delta: OnDelta,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> list[Completion]:
        """Decode `cfg.n` samples of one prompt, calling `on_delta` as text becomes final.

        Returns the finished completions (sample order). When `cancelled()` turns true (the client
        went away) decoding stops and the samples end with finish_reason "length".
        """
        limit = max_positions(self.model)
        if limit is not None and len(prompt_ids) >= limit:
            raise ValueError(f"the prompt has {len(prompt_ids)} tokens and fills the model's {limit} positions")
        sent = [0] * cfg.n  # characters of each sample already emitted

        def on_token(_: int, index: int, ids: list[int], done: Completion | None) -> None:
            if done is not None:
                on_delta(index, done.text[sent[index] :], done.finish_reason)
                sent[index] = len(done.text)
                return
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            safe = len(text) - held_back(text, cfg.stop)
            if safe > sent[index]:
                on_delta(index, text[sent[index] : safe], None)
                sent[index] = safe

        (completions,) = self.sampler.generate([prompt_ids], cfg, should_stop=cancelled, on_token=on_token)
        return completions
