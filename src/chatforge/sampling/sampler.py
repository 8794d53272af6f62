"""The one generation path: batched decoding with a KV cache over left-padded prompts.

Every stage that generates text (Best-of-N, ReST-EM, online RL, evaluation, the server) calls
`Sampler.generate(prompts, cfg)` and gets, per prompt, `cfg.n` `Completion`s with the token ids,
the text, the per-token log-probs and why each sample ended.

How a batch is decoded (`_decode_batch`):
1. The distinct prompts of the batch are left padded into one tensor; the attention mask marks the
   padding and the position ids count real tokens only (cumulative sum of the mask minus one), so a
   padded prompt sees exactly what it would see alone.
2. One prefill forward fills a `DynamicCache` and returns the logits of the last position only
   (`logits_to_keep=1`); for n > 1 the cache is then repeated n times, so each prompt is prefilled once.
3. Each step: pick the next token of every active row (argmax, or a draw from the temperature/top-k/
   top-p distribution with a seeded `torch.Generator`), record its raw log-prob, check stop ids and
   stop strings, drop the rows that finished from the batch (and from the cache), and run one forward
   over the remaining rows' new tokens.

Log-probs. `Completion.logprobs[t]` is log p(token_t | prefix) under the model's raw distribution
(temperature 1, no top-k/top-p), the quantity RL objectives and importance ratios need. It is not the
log-prob under the processed distribution the token was drawn from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from chatforge.errors import ChatforgeError, ConfigError
from chatforge.sampling.cache_arg import cache_kwargs
from chatforge.sampling.completion import Completion, FinishReason, OnToken
from chatforge.sampling.config import SamplingConfig
from chatforge.sampling.fast_decode import FastDecoder, unsupported_reason
from chatforge.sampling.json_constraint import JsonConstraint
from chatforge.sampling.json_schema import compile_schema
from chatforge.sampling.processors import (
    add_logit_bias,
    bias_row,
    min_p_filter,
    presence_frequency_penalty,
    repetition_penalty,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

MAX_JSON_CONSTRAINTS = 64  # schemas whose token masks stay cached (each request may bring a new one)


def chat_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    """Token ids of `messages` under the tokenizer's chat template, ending with the assistant's turn opener."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    return list(ids)


def max_positions(model) -> int | None:
    """Positions the model attends to at most: a prompt must be shorter; None when there is no limit.

    `Sampler.generate` refuses a prompt of this many tokens or more (no position left to answer in).
    ALiBi models extrapolate: there is no position table to run off.
    """
    config = model.config
    if getattr(config, "alibi", False):
        return None
    return getattr(config, "max_position_embeddings", None)


def default_stop_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """eos plus the chat template's end-of-turn token(s), when the tokenizer has a template."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if getattr(tokenizer, "chat_template", None):
        from chatforge.sft.masking import end_of_turn_ids

        ids += end_of_turn_ids(tokenizer)
    return list(dict.fromkeys(ids))


def filter_logits(logits_BV: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set every token outside the top-k / top-p (nucleus) set to -inf; at least one token survives.

    top-k keeps the k highest logits (ties at the k-th value are all kept). top-p keeps, in descending
    order of probability, each token whose strictly-higher-ranked tokens hold less than `top_p` of the
    mass: the smallest prefix whose mass reaches `top_p` (transformers' `TopPLogitsWarper` rule).
    top-k is applied first, top-p on what is left, as in transformers.
    """
    if top_k > 0 and top_k < logits_BV.shape[-1]:
        kth = torch.topk(logits_BV, top_k, dim=-1).values[..., -1:]
        logits_BV = logits_BV.masked_fill(logits_BV < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits_BV, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_above = probs.cumsum(dim=-1) - probs
        remove_sorted = mass_above >= top_p
        remove_sorted[..., 0] = False
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        logits_BV = logits_BV.masked_fill(remove, float("-inf"))
    return logits_BV


def draw(probs_BV: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row from `probs_BV` by inverse CDF: one uniform number per row.

    Exact sampling like `torch.multinomial`, at a fraction of its cost on CPU (multinomial spends
    ~1 ms per step on 8 x 8k probabilities; this is a cumsum and a binary search). With v in
    (0, total] and the first index whose cumulative mass reaches v, the chosen token always has
    mass > 0: a filtered (zero-probability) token is never drawn.
    """
    cdf_BV = probs_BV.cumsum(dim=-1)
    u_B1 = 1.0 - torch.rand((probs_BV.shape[0], 1), generator=generator, device=probs_BV.device, dtype=cdf_BV.dtype)
    index_B1 = torch.searchsorted(cdf_BV, u_B1 * cdf_BV[:, -1:])
    return index_B1.clamp_(max=probs_BV.shape[-1] - 1)[:, 0]


def nucleus_threshold(probs_BV: torch.Tensor, top_p: float) -> torch.Tensor:
    """Per row, the smallest probability top-p keeps, shape (B, 1): `probs >= threshold` is the nucleus.

    The nucleus is the top m tokens, m the least count whose mass reaches `top_p`, so the threshold is
    the m-th largest probability. It is found by radix selection on the probabilities' bit patterns
    (non-negative floats order like their int32 bits) in three passes of 12, 11 and 9 bits: each pass
    sums the mass of the remaining candidates per digit (`scatter_add`), walks the digits from the top
    until the mass above plus the digit's reaches `top_p`, fixes that digit and keeps only the
    candidates that share it. About 3x cheaper than sorting 8 rows of an 8k vocabulary on CPU, and
    exact: the kept set equals the sort-based rule of `filter_logits` except that tokens tying exactly
    with the last kept probability are all kept (a sort keeps an arbitrary subset of them).
    """
    if probs_BV.shape[-1] < 1 << 12:
        return _sorted_threshold(probs_BV, top_p)
    bits = probs_BV.contiguous().view(torch.int32)
    rows = probs_BV.shape[0]
    above = probs_BV.new_zeros((rows, 1))  # mass of the tokens already known to lie above the threshold
    prefix = torch.zeros((rows, 1), dtype=torch.int32, device=probs_BV.device)
    candidate = None  # tokens whose higher bits equal the threshold's bits found so far
    for shift, width in ((20, 12), (9, 11), (0, 9)):
        buckets = 1 << width
        digit = ((bits >> shift) & (buckets - 1)).long()
        mass = probs_BV if candidate is None else torch.where(candidate, probs_BV, 0.0)
        hist = probs_BV.new_zeros((rows, buckets)).scatter_add_(1, digit, mass)
        from_top = hist.flip(-1).cumsum(-1)  # [:, j]: candidate mass with digit >= buckets - 1 - j
        j = ((above + from_top) < top_p).sum(-1, keepdim=True).clamp_(max=buckets - 1)
        above = above + torch.where(j > 0, from_top.gather(-1, (j - 1).clamp(min=0)), 0.0)
        prefix = (prefix << width) | ((buckets - 1) - j).to(torch.int32)
        candidate = (bits >> shift) == prefix
    return prefix.view(torch.float32)


def _sorted_threshold(probs_BV: torch.Tensor, top_p: float) -> torch.Tensor:
    """`nucleus_threshold` by a sort, for vocabularies narrower than the radix pass's 4,096 digits
    (there a histogram costs more per row than sorting the row). Same rule: the m-th largest
    probability, m the least count whose mass reaches `top_p`."""
    sorted_BV = probs_BV.sort(dim=-1, descending=True).values
    mass_before = sorted_BV.cumsum(-1) - sorted_BV
    m = (mass_before < top_p).sum(-1, keepdim=True).clamp_(1, probs_BV.shape[-1])
    return sorted_BV.gather(-1, m - 1)


def draw_nucleus(
    logits_BV: torch.Tensor, top_k: int, top_p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`draw(filter_logits(logits, top_k, top_p).softmax())`, without sorting the vocabulary.

    top-k masks the logits below the k-th largest (`torch.topk`); top-p zeroes the probabilities
    below `nucleus_threshold`. Drawing by inverse CDF in vocabulary order samples the renormalized
    nucleus exactly (the draw does not need the tokens in rank order).
    """
    if 0 < top_k < logits_BV.shape[-1]:
        kth = torch.topk(logits_BV, top_k, dim=-1).values[..., -1:]
        logits_BV = logits_BV.masked_fill(logits_BV < kth, float("-inf"))
    probs_BV = logits_BV.softmax(dim=-1)
    if top_p < 1.0:
        probs_BV = probs_BV.masked_fill(probs_BV < nucleus_threshold(probs_BV, top_p), 0.0)
    return draw(probs_BV, generator)


def choose_tokens(logits_BV: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each row's next token under `cfg`: the argmax at temperature 0, else a draw after temperature,
    min-p, top-k and top-p (`draw_nucleus`). The one rule every decoding loop uses; the penalties
    (which need the tokens so far) are applied to `logits_BV` before it (`_decode_batch`)."""
    if cfg.greedy:
        return logits_BV.argmax(dim=-1)
    scaled = logits_BV / cfg.temperature if cfg.temperature != 1.0 else logits_BV
    scaled = min_p_filter(scaled, cfg.min_p)
    return draw_nucleus(scaled, cfg.top_k, cfg.top_p, generator)


def find_stop(text: str, stops: list[str]) -> tuple[int, str] | None:
    """(index, stop) of the stop string that occurs earliest in `text`; the longer one on a tie."""
    best: tuple[int, str] | None = None
    for stop in stops:
        i = text.find(stop)
        if i >= 0 and (best is None or i < best[0] or (i == best[0] and len(stop) > len(best[1]))):
            best = (i, stop)
    return best


class Sampler:
    """Batched sampling from a `transformers` causal LM (torch backend) or through vLLM.

    `model` is used as is (device, dtype); it is switched to eval mode during `generate` and back after.
    `model_path` (a saved Hugging Face directory of the same weights) is needed only for `backend="vllm"`.
    """

    def __init__(self, model, tokenizer: PreTrainedTokenizerBase, model_path: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.model_path = model_path
        self._vllm = None
        self._default_stop_ids: list[int] | None = None
        self._fast: FastDecoder | None = None
        self._json: dict[tuple, object] = {}  # JsonConstraint per (vocab, stop ids, device): its masks are cached

    # -- public API -----------------------------------------------------------------------------

    def generate(
        self, prompts: list[list[int]] | list[str], cfg: SamplingConfig | None = None,
        should_stop: Callable[[], bool] | None = None, on_token: OnToken | None = None,
    ) -> list[list[Completion]]:
        """`cfg.n` completions per prompt, in prompt order. String prompts are tokenized with the
        tokenizer's special tokens (bos where it adds one); chat prompts come from `chat_prompt`.
        `should_stop()`, asked before each decoding step, ends every sample where it is (finish
        reason "length") when it returns True: the server's callers have all gone. `on_token(prompt
        index, sample index, the sample's token ids so far, its Completion once it ended, their raw log-probs, their
        top_logprobs or None)` is called after every decoding step for every sample that took a step:
        what a stream is fed from."""
        cfg = cfg or SamplingConfig()
        if not prompts:
            return []
        prompt_ids = [self._encode(p, i) for i, p in enumerate(prompts)]
        stop_ids = self._stop_ids(cfg)
        if cfg.backend == "vllm":
            from chatforge.sampling.vllm_backend import VLLMBackend

            if self._vllm is None:
                self._vllm = VLLMBackend(self.model_path, self.tokenizer)
            results = self._vllm.generate(prompt_ids, cfg, stop_ids)
            for samples in results if on_token is not None else []:  # vLLM returns whole samples
                for index, completion in enumerate(samples):
                    on_token(completion.prompt_index, index, completion.token_ids, completion, completion.logprobs,
                             completion.top_logprobs)
            return results

        limit = max_positions(self.model)
        for i, ids in enumerate(prompt_ids):
            if limit is not None and len(ids) >= limit:
                raise ChatforgeError(
                    f"prompt {i} has {len(ids)} tokens but the model attends to at most {limit} positions; "
                    "shorten the prompt"
                )
        generator = None
        if cfg.seed is not None:
            generator = torch.Generator(device=self._device())
            generator.manual_seed(cfg.seed)
        results: list[list[Completion]] = [[] for _ in prompts]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for indices, repeats in _batches(len(prompt_ids), cfg.n, cfg.max_batch_size):
                    if should_stop is not None and should_stop():
                        break
                    batch = [prompt_ids[i] for i in indices]
                    first = [len(results[i]) for i in indices]  # samples of each prompt decoded so far
                    rows = self._decode_batch(batch, indices, repeats, cfg, stop_ids, generator, limit, should_stop, on_token, first)
                    for completion in rows:
                        results[completion.prompt_index].append(completion)
        finally:
            self.model.train(was_training)
        return results

    # -- helpers --------------------------------------------------------------------------------

    def _encode(self, prompt: list[int] | str, index: int) -> list[int]:
        ids = self.tokenizer(prompt)["input_ids"] if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise ChatforgeError(f"prompt {index} is empty; give at least one token (e.g. bos)")
        return ids

    def _stop_ids(self, cfg: SamplingConfig) -> list[int]:
        if cfg.stop_token_ids is not None:
            return list(cfg.stop_token_ids)
        if self._default_stop_ids is None:
            self._default_stop_ids = default_stop_ids(self.tokenizer)
        return self._default_stop_ids

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _decode_batch(
        self,
        prompts: list[list[int]],
        indices: list[int],
        repeats: int,
        cfg: SamplingConfig,
        stop_ids: list[int],
        generator: torch.Generator | None,
        limit: int | None,
        should_stop: Callable[[], bool] | None = None,
        on_token: OnToken | None = None,
        first_sample: list[int] | None = None,
    ) -> list[Completion]:
        device = self._device()
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, width - len(ids) :] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)

        prompt_lens = [len(p) for p in prompts for _ in range(repeats)]
        row_prompt = [i for i in indices for _ in range(repeats)]
        first_sample = first_sample or [0] * len(indices)
        row_sample = [first_sample[k] + r for k in range(len(indices)) for r in range(repeats)]
        n_rows = len(row_prompt)
        max_new = [
            cfg.max_new_tokens if limit is None else min(cfg.max_new_tokens, limit - n) for n in prompt_lens
        ]

        # 1) prefill each distinct prompt once, then give every sample its own copy of the cache
        steps = self._stepper(cfg, n_rows, width + max(max_new))
        logits_BV = steps.prefill(input_ids, mask, positions).float()
        if repeats > 1:
            steps.repeat(repeats)
            logits_BV = logits_BV.repeat_interleave(repeats, dim=0)
            positions = positions.repeat_interleave(repeats, dim=0)
        next_pos = positions[:, -1:] + 1  # (B, 1)
        penalties = _Penalties.for_batch(cfg, [prompts[r // repeats] for r in range(n_rows)], logits_BV.shape[-1], device)
        json_rule = self._json_constraint(logits_BV.shape[-1], stop_ids, device, cfg) if cfg.response_format != "text" else None
        json_states = [json_rule.start() for _ in range(n_rows)] if json_rule is not None else []
        bias_V = bias_row(cfg.logit_bias, logits_BV.shape[-1], device)

        stop_ids_t = torch.tensor(stop_ids, dtype=torch.long, device=device) if stop_ids else None
        stop_window = max((len(s) for s in cfg.stop), default=0) + 4  # tokens: each is at least one character
        tokens: list[list[int]] = [[] for _ in range(n_rows)]
        logps: list[list[float]] = [[] for _ in range(n_rows)]
        done: list[Completion | None] = [None] * n_rows
        tops: list[list[list[tuple[int, float]]]] = [[] for _ in range(n_rows)]  # cfg.top_logprobs per step
        active = list(range(n_rows))  # batch row -> sample row

        while True:
            # 2) choose the next token of every active row (after the penalties); record its raw log-prob
            processed_BV = penalties.apply(logits_BV) if penalties is not None else logits_BV
            processed_BV = add_logit_bias(processed_BV, bias_V)
            if json_rule is not None:
                allowed_BV = torch.stack([json_rule.mask(json_states[row]) for row in active])
                processed_BV = processed_BV.masked_fill(~allowed_BV, float("-inf"))
            next_B = choose_tokens(processed_BV, cfg, generator)
            logp_BV = torch.log_softmax(logits_BV, dim=-1)
            logp_B = logp_BV.gather(-1, next_B[:, None])[:, 0]
            if cfg.top_logprobs:
                values, ids = torch.topk(logp_BV, min(cfg.top_logprobs, logp_BV.shape[-1]), dim=-1)
                for b, (i, v) in enumerate(zip(ids.tolist(), values.tolist())):
                    tops[active[b]].append(list(zip(i, v)))
            if penalties is not None:
                penalties.add(next_B)
            is_stop_B = torch.isin(next_B, stop_ids_t) if stop_ids_t is not None else None
            next_list, logp_list = next_B.tolist(), logp_B.tolist()
            stop_list = is_stop_B.tolist() if is_stop_B is not None else [False] * len(active)

            keep: list[int] = []
            for b, row in enumerate(active):
                tokens[row].append(next_list[b])
                logps[row].append(logp_list[b])
                finished = self._finish(row, row_prompt[row], tokens[row], logps[row], stop_list[b], cfg, stop_window)
                if json_rule is not None and finished is None:
                    json_rule.advance(json_states[row], next_list[b])
                    if json_states[row].complete and not stop_ids:  # nothing may follow and no stop id to end on
                        finished = self._completion(row_prompt[row], tokens[row], logps[row], "stop", None)
                if finished is None and len(tokens[row]) >= max_new[row]:
                    finished = self._completion(row_prompt[row], tokens[row], logps[row], "length", None)
                if finished is None:
                    keep.append(b)
                else:
                    done[row] = finished
                if on_token is not None:
                    on_token(row_prompt[row], row_sample[row], tokens[row], finished, logps[row],
                             tops[row] if cfg.top_logprobs else None)
            if not keep:
                break
            if should_stop is not None and should_stop():
                for b in keep:
                    row = active[b]
                    done[row] = self._completion(row_prompt[row], tokens[row], logps[row], "length", None)
                    if on_token is not None:
                        on_token(row_prompt[row], row_sample[row], tokens[row], done[row], logps[row],
                                 tops[row] if cfg.top_logprobs else None)
                break
            # 3) drop finished rows, then one forward over the new tokens of the rest
            if len(keep) < len(active):
                keep_t = torch.tensor(keep, device=device)
                steps.select(keep_t)
                if penalties is not None:
                    penalties.select(keep_t)
                next_B, next_pos = next_B[keep_t], next_pos[keep_t]
                active = [active[b] for b in keep]
            logits_BV = steps.step(next_B, next_pos).float()
            next_pos = next_pos + 1
        if cfg.top_logprobs:
            for row, completion in enumerate(done):
                if completion is not None:  # a stop string may have cut the token ids
                    completion.top_logprobs = tops[row][: len(completion.token_ids)]
        return [c for c in done if c is not None]

    def _json_constraint(self, vocab: int, stop_ids: list[int], device, cfg: SamplingConfig) -> JsonConstraint:
        schema = compile_schema(cfg.json_schema) if cfg.response_format == "json_schema" else None
        key = (vocab, tuple(stop_ids), str(device), schema.key if schema is not None else None)
        if key not in self._json:
            plain = key[:3] + (None,)
            if plain not in self._json:
                self._json[plain] = JsonConstraint(self.tokenizer, vocab, stop_ids, device)
            # A schema's constraint shares the plain one's token bytes (one pass over the vocabulary).
            self._json[key] = self._json[plain].for_schema(schema)
            if len(self._json) > MAX_JSON_CONSTRAINTS:
                oldest = next(k for k in self._json if k[3] is not None)
                self._json.pop(oldest)
        return self._json[key]

    def _stepper(self, cfg: SamplingConfig, rows: int, capacity: int) -> _TransformersSteps | _FastSteps:
        """The forwards: chatforge's fast decoder where it applies (and is not switched off), else transformers'."""
        if cfg.decode != "transformers":
            reason = unsupported_reason(self.model, capacity)
            if reason is None:
                if self._fast is None:
                    self._fast = FastDecoder(self.model)
                self._fast.prepare(rows)
                return _FastSteps(self._fast, capacity)
            if cfg.decode == "fast":
                raise ConfigError(f"sampling.decode=fast cannot decode this model: {reason}; use decode=auto")
        return _TransformersSteps(self.model)

    def _finish(
        self, row: int, prompt_index: int, ids: list[int], logps: list[float], hit_stop_id: bool,
        cfg: SamplingConfig, stop_window: int,
    ) -> Completion | None:
        """The finished completion when the last token ended the sample, else None."""
        if hit_stop_id:
            return self._completion(prompt_index, ids, logps, "stop", ids[-1])
        if not cfg.stop:
            return None
        # Look only at the tail's text: a stop string not seen at the previous step must end in this token.
        tail = self.tokenizer.decode(ids[-stop_window:], skip_special_tokens=True)
        if find_stop(tail, cfg.stop) is None:
            return None
        # Cut the token ids at the first prefix whose text contains a stop string, the text before it.
        for t in range(max(1, len(ids) - stop_window), len(ids) + 1):
            text = self.tokenizer.decode(ids[:t], skip_special_tokens=True)
            hit = find_stop(text, cfg.stop)
            if hit is not None:
                return Completion(prompt_index, ids[:t], text[: hit[0]], logps[:t], "stop", hit[1])
        return None  # the window matched only a mis-decoded fragment (a split multi-byte character)

    def _completion(
        self, prompt_index: int, ids: list[int], logps: list[float], reason: FinishReason, stop: int | str | None
    ) -> Completion:
        text_ids = ids[:-1] if isinstance(stop, int) else ids
        text = self.tokenizer.decode(text_ids, skip_special_tokens=True)
        return Completion(prompt_index, list(ids), text, list(logps), reason, stop)


class _Penalties:
    """The token history the penalties need, one row per active sample: counts of the generated
    tokens (presence/frequency) and the tokens seen in the prompt or generated (repetition)."""

    def __init__(self, cfg: SamplingConfig, counts_BV: torch.Tensor | None, seen_BV: torch.Tensor | None):
        self.cfg, self.counts_BV, self.seen_BV = cfg, counts_BV, seen_BV

    @classmethod
    def for_batch(cls, cfg: SamplingConfig, row_prompts: list[list[int]], vocab: int, device) -> _Penalties | None:
        counted = cfg.presence_penalty != 0.0 or cfg.frequency_penalty != 0.0
        if not counted and cfg.repetition_penalty == 1.0:
            return None
        counts_BV = torch.zeros((len(row_prompts), vocab), device=device) if counted else None
        seen_BV = None
        if cfg.repetition_penalty != 1.0:
            seen_BV = torch.zeros((len(row_prompts), vocab), dtype=torch.bool, device=device)
            for row, ids in enumerate(row_prompts):
                seen_BV[row, torch.tensor(ids, device=device)] = True
        return cls(cfg, counts_BV, seen_BV)

    def apply(self, logits_BV: torch.Tensor) -> torch.Tensor:
        if self.seen_BV is not None:
            logits_BV = repetition_penalty(logits_BV, self.seen_BV, self.cfg.repetition_penalty)
        if self.counts_BV is not None:
            logits_BV = presence_frequency_penalty(logits_BV, self.counts_BV, self.cfg.presence_penalty, self.cfg.frequency_penalty)
        return logits_BV

    def add(self, next_B: torch.Tensor) -> None:
        rows = torch.arange(len(next_B), device=next_B.device)
        if self.counts_BV is not None:
            self.counts_BV[rows, next_B] += 1
        if self.seen_BV is not None:
            self.seen_BV[rows, next_B] = True

    def select(self, keep: torch.Tensor) -> None:
        self.counts_BV = self.counts_BV[keep] if self.counts_BV is not None else None
        self.seen_BV = self.seen_BV[keep] if self.seen_BV is not None else None


class _TransformersSteps:
    """The model's own forward on a `transformers` `DynamicCache`: one prefill, then one call per token."""

    def __init__(self, model):
        self.model = model

    def prefill(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        from transformers import DynamicCache

        self.cache, self.mask = DynamicCache(config=self.model.config), mask
        out = self.model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions,
            **cache_kwargs(self.model, self.cache), use_cache=True, logits_to_keep=1,
        )
        return out.logits[:, -1, :]

    def repeat(self, n: int) -> None:
        self.cache.batch_repeat_interleave(n)
        self.mask = self.mask.repeat_interleave(n, dim=0)

    def select(self, keep: torch.Tensor) -> None:
        self.cache.batch_select_indices(keep)
        self.mask = self.mask[keep]

    def step(self, token_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(token_ids), 1))], dim=1)
        out = self.model(
            input_ids=token_ids[:, None], attention_mask=self.mask, position_ids=positions,
            **cache_kwargs(self.model, self.cache), use_cache=True, logits_to_keep=1,
        )
        return out.logits[:, -1, :]


class _FastSteps:
    """`FastDecoder`'s prefill and steps on its preallocated cache (see fast_decode.py)."""

    def __init__(self, decoder: FastDecoder, capacity: int):
        self.decoder, self.capacity = decoder, capacity

    def prefill(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.state, logits = self.decoder.prefill(input_ids, mask, positions, self.capacity)
        return logits

    def repeat(self, n: int) -> None:
        self.state = self.decoder.repeat(self.state, n)

    def select(self, keep: torch.Tensor) -> None:
        self.state = self.decoder.select(self.state, keep)

    def step(self, token_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.decoder.step(self.state, token_ids, positions[:, 0])


def _batches(n_prompts: int, n: int, max_batch_size: int) -> list[tuple[list[int], int]]:
    """Split prompts x n samples into (prompt indices, samples each) batches of at most max_batch_size rows.

    When n fits in a batch, several prompts share one (each prefilled once); when n is larger than a
    batch, one prompt's samples are split over several batches.
    """
    if n <= max_batch_size:
        per_batch = max_batch_size // n
        return [(list(range(s, min(s + per_batch, n_prompts))), n) for s in range(0, n_prompts, per_batch)]
    out = []
    for i in range(n_prompts):
        left = n
        while left > 0:
            out.append(([i], min(left, max_batch_size)))
            left -= max_batch_size
    return out
