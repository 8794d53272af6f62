"""Streamed log-probs: with `stream: true` and `logprobs`, every SSE chunk carries its tokens' log-probs
in OpenAI's chunk shape, and the chunks' log-probs put end to end equal the non-streamed answer's
(greedy and seeded, with top alternatives, a stop string holding text back, n > 1; chat and completions)."""

from __future__ import annotations

import json
import urllib.request

import pytest

openai = pytest.importorskip("openai")

from served_tiny import openai_client, serve_tiny  # noqa: E402
from test_serve_openai_params import MESSAGES  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_tokenizer):
    """A tiny random chat model served on a free port: (url, Server)."""
    with serve_tiny(tmp_path_factory.mktemp("served_stream"), tiny_tokenizer, 48) as served:
        yield served


@pytest.fixture(scope="module")
def client(served):
    return openai_client(served[0])


def sse(url: str, body: dict) -> list[dict]:
    """The `data:` objects of a streamed response, in order ([DONE] dropped)."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        lines = response.read().decode().splitlines()
    return [json.loads(line[6:]) for line in lines if line.startswith("data: ") and line != "data: [DONE]"]


def _entry(item) -> tuple:
    return (item.token, round(item.logprob, 5), tuple(item.bytes or []),
            tuple((a.token, round(a.logprob, 5)) for a in item.top_logprobs))


@pytest.mark.parametrize("settings", [
    {"temperature": 0},
    {"temperature": 0, "stop": ["e"]},  # text held back at every "e" until the next token says
    {"temperature": 1.0, "seed": 4, "n": 2},
])
def test_chat_stream_logprobs_equal_the_non_streamed(client, settings):
    kwargs = dict(model="tiny", messages=MESSAGES, max_tokens=24, logprobs=True, top_logprobs=2, **settings)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    for choice in whole.choices:
        streamed = [item for c in chunks for ch in c.choices if ch.index == choice.index and ch.logprobs
                    for item in ch.logprobs.content]
        assert [_entry(i) for i in streamed] == [_entry(i) for i in choice.logprobs.content]
        assert len(streamed) > 0
        text = "".join(ch.delta.content or "" for c in chunks for ch in c.choices if ch.index == choice.index)
        assert text == choice.message.content


def test_each_chat_chunk_carries_the_tokens_of_its_text(served):
    url = served[0] + "/v1/chat/completions"
    chunks = sse(url, {"model": "tiny", "messages": MESSAGES, "max_tokens": 16, "temperature": 0, "stream": True,
                       "logprobs": True})
    with_text = [c["choices"][0] for c in chunks if c["choices"][0]["delta"].get("content")]
    assert len(with_text) >= 8
    for choice in with_text:
        content = choice["logprobs"]["content"]
        assert choice["logprobs"]["refusal"] is None and content
        # no top alternatives asked: empty lists, as OpenAI sends
        assert all(item["top_logprobs"] == [] for item in content)
        # the chunk's tokens spell its text (this tokenizer's tokens here are whole characters)
        spelled = b"".join(bytes(item["bytes"]) for item in content).decode(errors="replace")
        assert spelled == choice["delta"]["content"] or "\ufffd" in spelled


@pytest.mark.parametrize("settings", [{"temperature": 0}, {"temperature": 0, "stop": [" t"]}, {"temperature": 1.0, "seed": 2, "n": 2}])
def test_completion_stream_logprobs_equal_the_non_streamed(client, settings):
    kwargs = dict(model="tiny", prompt="The hills are", max_tokens=20, logprobs=3, **settings)
    whole = client.completions.create(**kwargs)
    chunks = list(client.completions.create(stream=True, **kwargs))
    for choice in whole.choices:
        parts = [ch.logprobs for c in chunks for ch in c.choices if ch.index == choice.index and ch.logprobs]
        assert parts
        assert sum((p.tokens for p in parts), []) == choice.logprobs.tokens
        assert sum((p.token_logprobs for p in parts), []) == pytest.approx(choice.logprobs.token_logprobs, abs=1e-5)
        assert [list(d) for p in parts for d in p.top_logprobs] == [list(d) for d in choice.logprobs.top_logprobs]
        assert sum((p.text_offset for p in parts), []) == choice.logprobs.text_offset
        text = "".join(ch.text for c in chunks for ch in c.choices if ch.index == choice.index)
        assert text == choice.text


def test_logprobs_off_keep_chunks_without_them(served):
    chunks = sse(served[0] + "/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": 6, "temperature": 0, "stream": True})
    assert chunks and all(c["choices"][0]["logprobs"] is None for c in chunks)


class CountingTokenizer:
    """The tokenizer, counting its `decode` calls (everything else passes through)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.decodes = tokenizer, 0

    def decode(self, *args, **kwargs):
        self.decodes += 1
        return self.tokenizer.decode(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


@pytest.mark.parametrize("with_tokens", [False, True])
def test_a_streamed_step_decodes_its_tokens_once(tiny_tokenizer, with_tokens):
    """The stream's hot path: with nothing held back (no stop string, no partial character), each step decodes the sample's ids once, log-probs or not (the old loop decoded
    them a second time to find the tokens covered by the sent text)."""
    from chatforge.sampling import Sampler, SamplingConfig
    from chatforge.serve.stream import IncrementalDecoder
    from tiny_models import make_tiny_model

    model = make_tiny_model(vocab_size=len(tiny_tokenizer), seed=3)
    counting = CountingTokenizer(tiny_tokenizer)
    decoder = IncrementalDecoder(model, counting, sampler=Sampler(model, tiny_tokenizer))  # only the stream counts
    # tokens that are part of a character are banned, so nothing is ever held back
    partial = {i: -100.0 for i in range(len(tiny_tokenizer)) if "\ufffd" in tiny_tokenizer.decode([i])}
    cfg = SamplingConfig(temperature=1.0, seed=4, n=2, max_new_tokens=12, top_logprobs=2, stop_token_ids=[],
                         logit_bias=partial)
    deltas: list[tuple] = []
    completions = decoder.generate(tiny_tokenizer("The hills are")["input_ids"], cfg,
                                   lambda *delta: deltas.append(delta), with_tokens=with_tokens)
    assert [len(c.token_ids) for c in completions] == [12, 12]
    assert all("\ufffd" not in c.text for c in completions)
    # one on_token call per step and sample; the last one hands over the finished Completion (no decode)
    assert counting.decodes == sum(len(c.token_ids) - 1 for c in completions) == 22
    if with_tokens:  # and the tokens still arrive, each once, in order
        for i, c in enumerate(completions):
            assert [t[0] for d in deltas if d[0] == i for t in d[3]] == c.token_ids


def test_chunk_offsets_count_a_character_split_across_chunks_once(tiny_tokenizer):
    """A chunk can start inside a UTF-8 character (byte-level BPE: "é" is two tokens here); its
    `text_offset`s come from the choice's text, so any split of a completion into chunks gives the
    non-streamed offsets."""
    from chatforge.sampling import Completion
    from chatforge.sampling.token_text import TokenText
    from chatforge.serve.logprob_objects import completion_chunk_logprobs, completion_logprobs

    text = TokenText(tiny_tokenizer)
    ids = tiny_tokenizer("café au", add_special_tokens=False)["input_ids"]
    assert [tiny_tokenizer.decode([i]) for i in ids] == ["c", "a", "f", "\ufffd", "\ufffd", " a", "u"]
    tokens = [(i, -1.0, []) for i in ids]
    # by hand: "caf" + the first byte of "é" decodes to 4 characters ("caf\ufffd"), and so does "café"
    assert completion_chunk_logprobs(text, tokens, [])["text_offset"] == [0, 1, 2, 3, 4, 4, 6]
    # the chunk starting with the second byte of "é": measured apart from the chunk before, " a" would be at 5
    assert completion_chunk_logprobs(text, tokens[4:], ids[:4])["text_offset"] == [4, 4, 6]
    for phrase in ("café au", "a\U0001f600b c\u00e9"):  # an emoji is four byte tokens
        ids = tiny_tokenizer(phrase, add_special_tokens=False)["input_ids"]
        tokens = [(i, -1.0, []) for i in ids]
        whole = completion_logprobs(text, Completion(0, ids, phrase, [-1.0] * len(ids), "length", None))["text_offset"]
        for split in range(len(ids) + 1):
            chunks = completion_chunk_logprobs(text, tokens[:split], [])["text_offset"] + \
                completion_chunk_logprobs(text, tokens[split:], ids[:split])["text_offset"]
            assert chunks == whole, (phrase, split)
