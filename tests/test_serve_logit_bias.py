"""`logit_bias` (token id -> bias in [-100, 100]) on chat and completions: the processor by hand, +100
forcing a token, -100 forbidding one (the next-ranked raw token takes its place), reported log-probs
staying the model's raw ones, and the 400s naming the field."""

from __future__ import annotations

import json

import pytest
import torch

openai = pytest.importorskip("openai")

from chatforge.sampling import SamplingConfig  # noqa: E402
from chatforge.sampling.processors import add_logit_bias, bias_row  # noqa: E402
from served_tiny import openai_client, serve_tiny  # noqa: E402
from test_serve import assert_openai_error, post_raw  # noqa: E402
from test_serve_openai_params import MESSAGES  # noqa: E402

MAX_TOKENS = 48


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_tokenizer):
    """A tiny random chat model served on a free port: (url, Server)."""
    with serve_tiny(tmp_path_factory.mktemp("served"), tiny_tokenizer, MAX_TOKENS) as served:
        yield served


@pytest.fixture(scope="module")
def client(served):
    return openai_client(served[0])


def test_bias_is_added_to_the_named_logits():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0], [3.0, 0.0, 0.0, 0.0]])
    row = bias_row({0: 2.5, 3: -100.0}, 4)
    assert row.tolist() == [2.5, 0.0, 0.0, -100.0]
    assert add_logit_bias(logits, row).tolist() == [[2.5, 1.0, 2.0, -101.0], [5.5, 0.0, 0.0, -100.0]]
    assert bias_row({}, 4) is None and add_logit_bias(logits, None) is logits
    with pytest.raises(ValueError, match="token id 4 is outside the model's 4 logits"):
        bias_row({4: 1.0}, 4)
    with pytest.raises(ValueError, match="logit_bias"):
        SamplingConfig(logit_bias={1: 100.5})


def test_plus_100_forces_a_token_and_minus_100_forbids_it(client, served):
    tokenizer = served[1].tokenizer
    prompt = "The weather in the hills"
    ids = tokenizer(prompt)["input_ids"]
    plain = client.completions.create(model="tiny", prompt=ids, max_tokens=6, temperature=0, logprobs=2)
    first = plain.choices[0].logprobs.top_logprobs[0]  # {token string: raw log-prob}, the 2 most likely
    ranked = sorted(first.items(), key=lambda kv: -kv[1])
    top_string, second_string = ranked[0][0], ranked[1][0]

    # Force: a token the model would not pick, at every step, sampled or greedy.
    forced = next(i for i in range(20, 300) if tokenizer.decode([i]).strip() and tokenizer.decode([i]) not in (top_string,))
    for temperature in (0.0, 1.0):
        reply = client.completions.create(model="tiny", prompt=ids, max_tokens=5, temperature=temperature, seed=1,
                                          logit_bias={str(forced): 100}, logprobs=1)
        assert reply.choices[0].text == tokenizer.decode([forced] * 5)
        # the reported log-probs are the raw model's (the bias is a sampling rule), not ~0
        assert reply.choices[0].logprobs.token_logprobs[0] < -0.5

    # Forbid: ban the greedy first token; greedy decoding then takes the raw second-ranked one.
    top_id = _id_of(tokenizer, top_string)
    banned = client.completions.create(model="tiny", prompt=ids, max_tokens=1, temperature=0,
                                       logit_bias={str(top_id): -100}, logprobs=1)
    assert banned.choices[0].logprobs.tokens[0] == second_string
    # ... and sampling never draws a banned token: ban 300 of the 384 (the most one request may list)
    def drawn(**bias) -> list[int]:
        reply = client.completions.create(model="tiny", prompt=[ids] * 4, max_tokens=3, temperature=1.0, n=4, seed=7,
                                          logprobs=1, **bias)
        assert len(reply.choices) == 16
        return [_id_of(tokenizer, s) for c in reply.choices for s in c.logprobs.tokens]

    assert not any(i >= 84 for i in drawn(logit_bias={str(i): -100 for i in range(84, 384)}))
    assert sum(i >= 84 for i in drawn()) > 16  # unbiased, most of the 48 draws fall among those 300


def _id_of(tokenizer, token_string: str) -> int:
    """The id whose token string (as the server's log-probs name it) is `token_string`."""
    from chatforge.sampling.token_text import TokenText

    text = TokenText(tokenizer)
    (match,) = [i for i in range(len(tokenizer)) if text.string_of(i) == token_string]
    return match


def test_chat_takes_logit_bias_too(client, served):
    tokenizer = served[1].tokenizer
    forced = next(i for i in range(40, 300) if tokenizer.decode([i]).strip())
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, temperature=0.7, seed=3,
                                           logit_bias={str(forced): 100})
    assert reply.choices[0].message.content == tokenizer.decode([forced] * 4)
    assert reply.choices[0].finish_reason == "length"


@pytest.mark.parametrize(("bias", "param", "words"), [
    ({"5": 100.5}, "logit_bias.5", "less than or equal to 100"),
    ({"5": -101}, "logit_bias.5", "greater than or equal to -100"),
    ({"abc": 1}, "logit_bias", "'abc'"),
    ({"-3": 1}, "logit_bias", "'-3'"),
    ({"384": 1}, "logit_bias", "outside the vocabulary [0, 384)"),
    ({str(i): 1 for i in range(301)}, "logit_bias", "at most 300"),
    ({"5": "high"}, "logit_bias.5", "number"),
])
@pytest.mark.parametrize("endpoint", ["chat", "text"])
def test_bad_logit_bias_is_a_400_naming_it(served, endpoint, bias, param, words):
    url = served[0]
    base = {"model": "tiny", "messages": MESSAGES} if endpoint == "chat" else {"model": "tiny", "prompt": "hi"}
    path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
    status, body = post_raw(url + path, json.dumps({**base, "max_tokens": 2, "logit_bias": bias}).encode())
    assert status == 400, body
    error = assert_openai_error(body)
    assert error["param"] == param and "logit_bias" in error["message"] and words in error["message"], error
