"""`response_format: json_object` / `json_schema`: constrained decoding to a JSON object (valid against
the schema, when there is one: json_schema.py), one token mask per step.

For each sample the sampler keeps a `JsonPrefix` (json_prefix.py). Before a token is chosen, every
token whose bytes the automaton refuses gets logit -inf; once the object has closed, only the stop
ids remain (the sample ends there). So a sample that ends on a stop token is a whole JSON object,
and one cut by `max_tokens` (`finish_reason: length`) is a prefix of one, as OpenAI documents for
its JSON mode. Special tokens never occur inside the JSON. Stop strings are still applied and can
cut the object: do not combine them.

A mask depends only on the automaton's state, the union of its paths' masks (several paths only while
an anyOf value fits several alternatives), so masks are cached per path state (inside a string the
state repeats token after token). Building one tests each token's bytes,
grouped by first byte so that a refused first byte rules out its whole group at once.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict

import torch

from chatforge.errors import ChatforgeError
from chatforge.sampling.json_prefix import DONE, JsonPrefix, takes
from chatforge.sampling.json_schema import JsonSchema
from chatforge.sampling.token_text import TokenText

MAX_CACHED_MASKS = 4096


class JsonConstraint:
    def __init__(self, tokenizer, vocab_size: int, stop_ids: list[int], device: torch.device | str = "cpu",
                 schema: JsonSchema | None = None):
        text = TokenText(tokenizer)
        self.schema = schema  # None: any JSON object
        self.vocab_size, self.device = vocab_size, device
        self.stop_ids = [i for i in stop_ids if i < vocab_size]
        self.token_bytes: list[bytes | None] = [None] * vocab_size
        self.by_first_byte: dict[int, list[int]] = defaultdict(list)
        for i in range(min(vocab_size, len(tokenizer))):
            if i in text.special or i in self.stop_ids:
                continue
            data = text.bytes_of(i)
            if data:
                self.token_bytes[i] = data
                self.by_first_byte[data[0]].append(i)
        self._masks: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def for_schema(self, schema: JsonSchema | None) -> JsonConstraint:
        """The same vocabulary under another schema: the token bytes are shared, the mask cache is new."""
        other = JsonConstraint.__new__(JsonConstraint)
        other.__dict__.update(self.__dict__)
        other.schema, other._masks = schema, OrderedDict()
        return other

    def start(self) -> JsonPrefix:
        """A new sample's automaton, before its first byte."""
        return JsonPrefix(self.schema)

    def mask(self, state: JsonPrefix) -> torch.Tensor:
        """(vocab,) bool: the tokens that may come next in `state` (those of any of its paths)."""
        if len(state.paths) == 1:
            allowed = self._path_mask(state.paths[0])
        else:
            allowed = torch.stack([self._path_mask(path) for path in state.paths]).any(dim=0)
        if not allowed.any():
            raise ChatforgeError("response_format json: no token of this vocabulary can continue the JSON")
        return allowed

    def _path_mask(self, path) -> torch.Tensor:
        """The tokens one path of the automaton takes (a token may fork it: anyOf), cached per path state."""
        key = path.key_state()
        cached = self._masks.get(key)
        if cached is not None:
            self._masks.move_to_end(key)
            return cached
        allowed = torch.zeros(self.vocab_size, dtype=torch.bool)
        if path.mode == DONE:
            allowed[self.stop_ids] = True
        else:
            for first, ids in self.by_first_byte.items():
                after_first = JsonPrefix.following(path)
                if not after_first.feed(first):
                    continue
                if len(after_first.paths) == 1:
                    one = after_first.paths[0]
                    allowed[[i for i in ids if len(self.token_bytes[i]) == 1 or takes(one, self.token_bytes[i][1:])]] = True
                else:  # the first byte forked it (anyOf)
                    allowed[[i for i in ids if after_first.copy().feed_all(self.token_bytes[i][1:])]] = True
        allowed = allowed.to(self.device)
        self._masks[key] = allowed
        if len(self._masks) > MAX_CACHED_MASKS:
            self._masks.popitem(last=False)
        return allowed

    def advance(self, state: JsonPrefix, token_id: int) -> None:
        """Feed the chosen token (a stop id changes nothing: the sample ends)."""
        data = self.token_bytes[token_id] if token_id < self.vocab_size else None
        if data is not None and not state.feed_all(data):
            raise ChatforgeError(f"response_format json: token {token_id} was chosen outside its mask")
