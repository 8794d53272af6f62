"""Token-by-token decoding for streamed responses (`stream: true`) and the chat REPL.

The sampler (`chatforge.sampling`) returns whole completions, so a stream cannot be fed from it.
`IncrementalDecoder` decodes one prompt's n samples itself, with the same computation as the
sampler's torch backend: one prefill on a `DynamicCache` with `logits_to_keep=1`, the cache repeated
n times, then one forward per token; tokens chosen by the sampler's own rule (`choose_tokens`).
At temperature 0 it picks the same tokens as `Sampler.generate` for the same prompt (tested).
Seeded draws can differ from the sampler's (the sampler's rows may be batched with other prompts).

Text is emitted as soon as it is final: the decoder re-decodes each sample's tokens after every step
and sends the new characters, holding back a trailing partial UTF-8 character ("\\ufffd") and any
tail that could still grow into a stop string, so the concatenated deltas equal the finished text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from chatforge.sampling import Completion, SamplingConfig, choose_tokens, find_stop, max_positions
from chatforge.sampling.cache_arg import cache_kwargs
from chatforge.sampling.sampler import default_stop_ids

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


@dataclass
class _Row:
    ids: list[int] = field(default_factory=list)
    logps: list[float] = field(default_factory=list)
    sent: int = 0  # characters already emitted
    done: Completion | None = None


class IncrementalDecoder:
    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self._default_stop_ids = default_stop_ids(tokenizer)

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
        from transformers import DynamicCache

        limit = max_positions(self.model)
        max_new = cfg.max_new_tokens if limit is None else min(cfg.max_new_tokens, limit - len(prompt_ids))
        if max_new < 1:
            raise ValueError(f"the prompt has {len(prompt_ids)} tokens and fills the model's {limit} positions")
        stop_ids = set(self._default_stop_ids if cfg.stop_token_ids is None else cfg.stop_token_ids)
        device = next(self.model.parameters()).device
        generator = None
        if cfg.seed is not None:
            generator = torch.Generator(device=device)
            generator.manual_seed(cfg.seed)
        rows = [_Row() for _ in range(cfg.n)]
        with torch.inference_mode():
            input_ids = torch.tensor([prompt_ids], device=device)
            mask = torch.ones_like(input_ids)
            cache = DynamicCache(config=self.model.config)
            out = self.model(
                input_ids=input_ids, attention_mask=mask, position_ids=torch.arange(len(prompt_ids), device=device)[None],
                **cache_kwargs(self.model, cache), use_cache=True, logits_to_keep=1,
            )
            logits_BV = out.logits[:, -1, :].float()
            if cfg.n > 1:
                cache.batch_repeat_interleave(cfg.n)
                logits_BV = logits_BV.repeat_interleave(cfg.n, dim=0)
                mask = mask.repeat_interleave(cfg.n, dim=0)
            position = len(prompt_ids)
            # Finished rows stay in the batch (their tokens are ignored): n is small and rows are cheap.
            while True:
                next_B = choose_tokens(logits_BV, cfg, generator)
                logp_B = torch.log_softmax(logits_BV, dim=-1).gather(-1, next_B[:, None])[:, 0]
                stop_now = cancelled()
                for i, (token, logp) in enumerate(zip(next_B.tolist(), logp_B.tolist())):
                    row = rows[i]
                    if row.done is None:
                        row.ids.append(token)
                        row.logps.append(logp)
                        self._advance(i, row, token in stop_ids, len(row.ids) >= max_new or stop_now, cfg, on_delta)
                if all(row.done is not None for row in rows):
                    break
                mask = torch.cat([mask, mask.new_ones((cfg.n, 1))], dim=1)
                out = self.model(
                    input_ids=next_B[:, None], attention_mask=mask,
                    position_ids=torch.full((cfg.n, 1), position, device=device),
                    **cache_kwargs(self.model, cache), use_cache=True, logits_to_keep=1,
                )
                logits_BV = out.logits[:, -1, :].float()
                position += 1
        return [row.done for row in rows]  # type: ignore[misc]

    def _advance(self, index: int, row: _Row, hit_stop_id: bool, at_limit: bool, cfg: SamplingConfig,
                 on_delta: OnDelta) -> None:
        """Update one sample after its new token: finish it, or send the text that became final."""
        if hit_stop_id:
            text = self.tokenizer.decode(row.ids[:-1], skip_special_tokens=True)
            row.done = Completion(0, row.ids, text, row.logps, "stop", row.ids[-1])
        else:
            text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
            hit = find_stop(text, cfg.stop)
            if hit is not None:
                text = text[: hit[0]]
                row.done = Completion(0, row.ids, text, row.logps, "stop", hit[1])
            elif at_limit:
                row.done = Completion(0, row.ids, text, row.logps, "length", None)
        if row.done is not None:
            on_delta(index, text[row.sent :], row.done.finish_reason)
            return
        safe = len(text) - held_back(text, cfg.stop)
        if safe > row.sent:
            on_delta(index, text[row.sent : safe], None)
            row.sent = safe
