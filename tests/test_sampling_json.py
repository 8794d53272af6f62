"""`response_format: json_object`: the JSON prefix automaton against Python's json module, and the
sampler's constrained decoding (every sample a prefix of a JSON object, a whole one when it stops)."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from chatforge.sampling import Sampler, SamplingConfig
from chatforge.sampling.json_prefix import JsonPrefix
from tiny_models import make_tiny_model

_leaf = st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False, allow_infinity=False, width=32) | st.text(max_size=8)
_json = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=10)
_objects = st.dictionaries(st.text(max_size=5), _json, max_size=4)


def accepts(text: str | bytes) -> JsonPrefix | None:
    state = JsonPrefix()
    data = text.encode() if isinstance(text, str) else text
    return state if state.feed_all(data) else None


@settings(max_examples=300, deadline=None)
@given(_objects, st.sampled_from([None, 1, 2]), st.booleans())
def test_every_prefix_of_a_json_object_is_accepted_and_only_the_whole_is_complete(obj, indent, ascii_only):
    text = json.dumps(obj, indent=indent, ensure_ascii=ascii_only).encode()
    state = JsonPrefix()
    for i, b in enumerate(text):
        assert not state.complete
        assert state.feed(b), (text, i)
    assert state.complete
    assert not state.copy().feed(ord(" ")) and not state.copy().feed(ord("{"))  # nothing may follow


_ALPHABET = list('{}[]:,"\\ -.0123456789eEtrufalsn') + ["ab", "\u00e9", "\n", "\x01"]


@settings(max_examples=400, deadline=None)
@given(_objects, st.lists(st.tuples(st.integers(0, 200), st.sampled_from(["del", "ins", "rep"]), st.sampled_from(_ALPHABET)), max_size=3))
def test_complete_exactly_when_json_loads_gives_an_object(obj, edits):
    text = json.dumps(obj, separators=(",", ":"))
    for pos, op, piece in edits:
        pos %= len(text) + 1
        text = text[:pos] + ("" if op == "del" else piece) + text[pos + (op != "ins") :]
    state = accepts(text)
    try:
        parsed = json.loads(text)
        strict_object = isinstance(parsed, dict) and text == text.rstrip()  # leading whitespace is fine, trailing is not
    except ValueError:
        strict_object = False
    assert (state is not None and state.complete) == strict_object, text


def test_hand_cases():
    for good in ['{}', '{"a":1}', '{"a":[1,-2.5e+3,true,null,{"b":"\\u00e9\\n"}]}', ' {"a" : 0.5 }', '{"\u00e9":"\u2713"}']:
        assert accepts(good) and accepts(good).complete, good
    for prefix in ['{"a":', '{"a":[1,', '{"a":tr', '{"a":"\\u00', '{"a":-', '{"a":1.5e']:
        state = accepts(prefix)
        assert state is not None and not state.complete, prefix
    for bad in ['[1]', '"a"', '{"a" 1}', '{,}', '{"a":01}', '{"a":1.}', '{"a":+1}', '{"a":tru}', '{"a":"\x01"}',
                '{"a":"\\x"}', '{"a":1,}', '{"a":[1,]}', '{"a":1]', '{} ', '{}{}', '{"a":' + "1" * 40 + "}",
                '{' + " " * 17 + '}']:
        assert accepts(bad) is None or not accepts(bad).complete, bad
        assert accepts(bad) is None, bad


@pytest.fixture(scope="module")
def model():
    return make_tiny_model(vocab_size=384, seed=3, tie_word_embeddings=False).eval()


def test_sampled_json_is_always_an_object_prefix(model, tiny_tokenizer):
    sampler = Sampler(model, tiny_tokenizer)
    cfg = SamplingConfig(temperature=1.0, seed=5, n=4, max_new_tokens=30, response_format="json_object")
    out = sampler.generate([[40, 41, 42], [60, 61]], cfg)
    for samples in out:
        for c in samples:
            assert accepts(c.text.encode()) is not None, c.text
            if c.finish_reason == "stop":
                assert isinstance(json.loads(c.text), dict)
    # The unconstrained model almost never starts with "{": the constraint is doing the work.
    free = sampler.generate([[40, 41, 42]], cfg.model_copy(update={"response_format": "text"}))
    assert not all(c.text.startswith("{") for c in free[0])


def test_greedy_json_closes_and_stops_when_the_model_likes_the_closing_tokens(model, tiny_tokenizer):
    """With a logit bonus for `"`, `:` and `}` the greedy object closes quickly; the constraint then
    allows only the stop ids, so the sample ends there with a whole object."""
    ids = {ch: tiny_tokenizer.convert_tokens_to_ids(ch) for ch in ['"', ":", "}", ","]}
    bonus = torch.zeros(384)
    for ch, value in {'"': 30.0, ":": 25.0, "}": 20.0, ",": 10.0}.items():
        bonus[ids[ch]] = value
    eos = tiny_tokenizer.eos_token_id
    bonus[eos] = 40.0  # the model would stop at once if it were allowed to
    hook = model.lm_head.register_forward_hook(lambda mod, inp, out: out + bonus)
    try:
        sampler = Sampler(model, tiny_tokenizer)
        cfg = SamplingConfig(temperature=0, max_new_tokens=20, response_format="json_object", decode="transformers",
                             stop_token_ids=[eos])
        (c,) = sampler.generate([[40, 41, 42]], cfg)[0]
    finally:
        hook.remove()
    assert c.finish_reason == "stop" and c.token_ids[-1] == eos  # ended on eos, only allowed once the object closed
    assert json.loads(c.text) == {"": ""}, c.text
