"""Token-by-token text for streamed responses (`stream: true`) and the chat REPL.

There is one decoding loop, the sampler's: `IncrementalDecoder` runs `Sampler.generate` on one prompt
with an `on_token` callback, so a stream gets exactly the tokens, stop handling and log-probs of a
non-streamed call with the same settings (tested token for token, seeded draws included).

Text is emitted as soon as it is final: the decoder re-decodes each sample's tokens after every step
and sends the new characters, holding back a trailing partial UTF-8 character ("\\ufffd") and any
tail that could still grow into a stop string, so the concatenated deltas equal the finished text.

With `with_tokens=True` each delta also carries the tokens it covers, `(id, raw log-prob, top
alternatives)`: the tokens whose text lies wholly in the text sent so far, and at the end the rest of
the tokens the answer shows (a stop token that ended it is not shown, as in `logprob_objects`). So the
concatenated tokens of a stream are the non-streamed answer's log-prob entries, one for one.
"""

from __future__ import annotations

from collections.abc import Callable

from chatforge.sampling import Completion, SamplingConfig, max_positions
from chatforge.serve.logprob_objects import shown_tokens

# (sample index, new text, finish reason or None[, the tokens it covers]); called from the decoding thread.
OnDelta = Callable[..., None]
# A streamed token: (id, raw log-prob, the top_logprobs alternatives [(id, log-prob)], [] when not asked).
StreamToken = tuple[int, float, list[tuple[int, float]]]


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
        with_tokens: bool = False,
    ) -> list[Completion]:
        """Decode `cfg.n` samples of one prompt, calling `on_delta(index, text, finish)` as text
        becomes final (`on_delta(index, text, finish, tokens)` with `with_tokens`).

        Returns the finished completions (sample order). When `cancelled()` turns true (the client
        went away) decoding stops and the samples end with finish_reason "length".
        """
        limit = max_positions(self.model)
        if limit is not None and len(prompt_ids) >= limit:
            raise ValueError(f"the prompt has {len(prompt_ids)} tokens and fills the model's {limit} positions")
        sent = [0] * cfg.n  # characters of each sample already emitted
        sent_tokens = [0] * cfg.n  # tokens of each sample whose log-probs were emitted

        def emit(index: int, text: str, finish: str | None, ids: list[int], logps: list[float], tops, upto: int) -> None:
            if not with_tokens:
                on_delta(index, text, finish)
                return
            tokens = [(ids[t], logps[t], tops[t] if tops else []) for t in range(sent_tokens[index], upto)]
            sent_tokens[index] = max(sent_tokens[index], upto)
            on_delta(index, text, finish, tokens)

        def on_token(_: int, index: int, ids: list[int], done: Completion | None, logps: list[float], tops) -> None:
            if done is not None:
                emit(index, done.text[sent[index] :], done.finish_reason, done.token_ids, done.logprobs, tops, shown_tokens(done))
                sent[index] = len(done.text)
                return
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            safe = len(text) - held_back(text, cfg.stop)
            if safe > sent[index]:

                def length(upto: int) -> int:  # of the text of ids[:upto]; all of them: `text`, decoded once per step
                    return len(text) if upto == len(ids) else len(self.tokenizer.decode(ids[:upto], skip_special_tokens=True))

                upto = len(ids)  # the tokens whose text is all sent: none of a held-back tail
                while with_tokens and upto > sent_tokens[index] and length(upto) > safe:
                    upto -= 1
                emit(index, text[sent[index] : safe], None, ids, logps, tops, upto)
                sent[index] = safe

        (completions,) = self.sampler.generate([prompt_ids], cfg, should_stop=cancelled, on_token=on_token)
        return completions
