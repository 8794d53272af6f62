"""The server under abuse: hostile bodies are 400s (never 500s), slow or unfinished requests time
out, connections and the queue are bounded (503/429 with Retry-After), an abandoned non-streamed
request stops decoding, a fuzzed request parser only ever accepts or answers 4xx, and a mixed
valid/invalid load gets zero 5xx."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatforge.data.safe_json import JsonRejected, decode_json
from chatforge.serve import ServeConfig
from chatforge.serve.loadtest import main as loadtest_main
from chatforge.serve.protocol import APIError, ChatCompletionRequest, CompletionRequest, parse_request
from chatforge.serve.server import BackgroundServer, build
from test_serve import model_dir, post_raw  # noqa: F401 - the fixture is used by name

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def guarded(model_dir):  # noqa: F811
    """A server with short limits: 1.5 s to send a request, 6 connections, a queue of 1."""
    cfg = ServeConfig(model_dir=str(model_dir), model_name="tiny", max_tokens=48, max_n=4, log_level="warning",
                      read_timeout_s=1.5, max_connections=6, max_queue=1, retry_after_s=2)
    app = build(cfg)
    with BackgroundServer(app) as url:
        yield url, app.state.server


def raw_exchange(url: str, data: bytes, wait_s: float = 10.0) -> tuple[bytes, float]:
    """Send `data` on a fresh connection; return everything the server sends until it closes, and when."""
    host, port = url.removeprefix("http://").split(":")
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received, time.monotonic() - start


# -- 400s that were 500s --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("endpoint", "body", "param"),
    [
        ("chat/completions", json.dumps({**CHAT, "seed": 2**63}).encode(), "seed"),
        ("completions", json.dumps({"model": "tiny", "prompt": "a", "seed": -(2**63) - 1}).encode(), "seed"),
        ("completions", json.dumps({"model": "tiny", "prompt": "a", "n": True}).encode(), "n"),
        ("chat/completions", json.dumps({**CHAT, "stream": 1}).encode(), "stream"),
        ("completions", json.dumps({"model": "tiny", "prompt": [5, True]}).encode(), None),
        ("completions", json.dumps({"model": "tiny", "prompt": "a", "top_k": 2**40}).encode(), "top_k"),
    ],
)
def test_out_of_range_and_mistyped_integers_are_400(guarded, endpoint, body, param):
    status, answer = post_raw(f"{guarded[0]}/v1/{endpoint}", body)
    assert status == 400 and answer["error"]["code"] == "invalid_value"
    if param:
        assert answer["error"]["param"] == param


def test_the_largest_64_bit_seed_is_served(guarded):
    status, answer = post_raw(f"{guarded[0]}/v1/completions",
                              json.dumps({"model": "tiny", "prompt": "a", "max_tokens": 2, "seed": 2**63 - 1}).encode())
    assert status == 200 and answer["choices"]


@pytest.mark.parametrize(
    ("endpoint", "body", "reason"),
    [
        ("chat/completions", b"[" * 15_000 + b"]" * 15_000, "too_deep"),
        ("completions", b'{"model": "tiny", "prompt": "\\ud800 x"}', "lone_surrogate"),
        ("chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "\\udc00"}]}', "lone_surrogate"),
        ("completions", b'{"model": "tiny", "prompt": "a", "max_tokens": ' + b"9" * 5000 + b"}", "number_too_long"),
        ("completions", b'{"model": "tiny", "prompt": "a", "temperature": NaN}', "non_finite_number"),
    ],
)
def test_hostile_json_bodies_are_400_naming_the_reason(guarded, endpoint, body, reason):
    status, answer = post_raw(f"{guarded[0]}/v1/{endpoint}", body)
    assert status == 400 and answer["error"]["code"] == "invalid_json"
    assert f"({reason})" in answer["error"]["message"]


def test_a_body_with_a_bom_is_read(guarded):
    status, _ = post_raw(f"{guarded[0]}/v1/chat/completions", b"\xef\xbb\xbf" + json.dumps(CHAT).encode())
    assert status == 200


# -- timeouts and limits ----------------------------------------------------------------------------

def test_a_trickled_body_is_answered_408_and_closed(guarded):
    host = guarded[0].removeprefix("http://")
    head = f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    received, seconds = raw_exchange(guarded[0], head.encode() + b'{"model": ')
    assert received.startswith(b"HTTP/1.1 408 ") and b'"code": "request_timeout"' in received
    assert 1.4 < seconds < 8


def test_unfinished_headers_are_answered_408_and_closed(guarded):
    received, seconds = raw_exchange(guarded[0], b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    assert received.startswith(b"HTTP/1.1 408 ") and 1.4 < seconds < 8


def test_connections_beyond_the_limit_get_503_with_retry_after(guarded):
    host, port = guarded[0].removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port))) for _ in range(6)]
    try:
        time.sleep(0.2)
        received, _ = raw_exchange(guarded[0], b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert received.startswith(b"HTTP/1.1 503 ") and b"retry-after: 2" in received.lower()
        assert b'"code": "too_many_connections"' in received
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)
    status, _ = post_raw(f"{guarded[0]}/v1/completions", json.dumps({"model": "tiny", "prompt": "a", "max_tokens": 1}).encode())
    assert status == 200  # the server serves again once they are gone


def test_a_full_queue_is_429_with_retry_after(guarded, monkeypatch):
    import urllib.error
    import urllib.request

    url, server = guarded
    release = threading.Event()
    entered = threading.Event()
    original = server.engine.sampler.generate

    def blocking(prompts, cfg=None, **kw):
        entered.set()
        release.wait(30)
        return original(prompts, cfg, **kw)

    monkeypatch.setattr(server.engine.sampler, "generate", blocking)
    body = json.dumps({"model": "tiny", "prompt": "a", "max_tokens": 1}).encode()
    background = [threading.Thread(target=post_raw, args=(f"{url}/v1/completions", body)) for _ in range(2)]
    background[0].start()
    assert entered.wait(10)  # the worker holds the first request
    background[1].start()  # the second fills the queue of 1
    deadline = time.monotonic() + 10
    while server.engine._queue.qsize() < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    request = urllib.request.Request(f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as full:
        urllib.request.urlopen(request, timeout=10)
    assert full.value.code == 429 and full.value.headers["Retry-After"] == "2"
    assert json.loads(full.value.read())["error"]["code"] == "queue_full"
    release.set()
    for thread in background:
        thread.join(30)


def test_an_abandoned_non_streamed_request_stops_decoding(guarded, monkeypatch):
    url, server = guarded
    decoded: list[int] = []
    original = server.engine.sampler.generate

    def slow(prompts, cfg=None, should_stop=None, **kw):
        # Never stop at an end-of-text token, and take 50 ms a step: 48 tokens would take 2.4 s.
        cfg = cfg.model_copy(update={"stop_token_ids": []})

        def stop() -> bool:
            time.sleep(0.05)
            return should_stop is not None and should_stop()

        out = original(prompts, cfg, should_stop=stop, **kw)
        decoded.append(max(len(c.token_ids) for per_prompt in out for c in per_prompt))
        return out

    monkeypatch.setattr(server.engine.sampler, "generate", slow)
    host = url.removeprefix("http://")
    body = json.dumps({"model": "tiny", "prompt": "a", "max_tokens": 48, "temperature": 0}).encode()
    head = f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection(tuple(url.removeprefix("http://").split(":"))[:1] + (int(host.split(":")[1]),)) as sock:
        sock.sendall(head.encode() + body)
        time.sleep(0.6)  # the client gives up while the answer is being decoded
    deadline = time.monotonic() + 15
    while not decoded and time.monotonic() < deadline:
        time.sleep(0.05)
    assert decoded and decoded[0] < 30, decoded  # stopped well before its 48 tokens


# -- the request parser, fuzzed -----------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                       max_leaves=8)
_FIELDS = ["model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "n",
           "stop", "seed", "stream", "stream_options", "presence_penalty", "logit_bias", "user", "echo", "best_of",
           "logprobs", "top_logprobs", "suffix"]
_messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", 3]),
                                            "content": st.text(max_size=30) | _values}), max_size=3)
_bodies = st.dictionaries(st.sampled_from(_FIELDS), _values, max_size=6).flatmap(
    lambda d: st.fixed_dictionaries({"model": st.just("tiny"), "messages": _messages, "prompt": st.text(max_size=20) | _values})
    .map(lambda base: {**base, **d})
)


def _handle(server, endpoint: str, raw: bytes) -> str:
    """What the server does with a body up to generation: "ok", or the 4xx it answers."""
    try:
        data = decode_json(raw)
    except JsonRejected:
        return "400"
    try:
        if endpoint == "chat":
            req = parse_request(ChatCompletionRequest, data)
            server.check_model(req.model)
            ids = server.chat_prompt_ids(req)
            server.sampling_config(req, req.max_completion_tokens or req.max_tokens, [len(ids)])
        else:
            req = parse_request(CompletionRequest, data)
            server.check_model(req.model)
            prompts = server.completion_prompt_ids(req)
            server.sampling_config(req, req.max_tokens, [len(p) for p in prompts], "prompt")
    except APIError as exc:
        assert 400 <= exc.status < 500, exc.message
        return str(exc.status)
    return "ok"


FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.sampled_from(["chat", "text"]), _bodies, st.booleans())
def test_fuzzed_request_bodies_are_accepted_or_4xx(guarded, endpoint, body, ascii_only):
    _handle(guarded[1], endpoint, json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.sampled_from(["chat", "text"]), st.binary(max_size=200) | _values.map(lambda v: json.dumps(v).encode()))
def test_fuzzed_raw_bytes_are_accepted_or_4xx(guarded, endpoint, raw):
    _handle(guarded[1], endpoint, raw)


# -- load -----------------------------------------------------------------------------------------

def test_mixed_valid_and_invalid_load_gets_no_5xx(model_dir, capsys):  # noqa: F811
    cfg = ServeConfig(model_dir=str(model_dir), model_name="tiny", max_tokens=16, log_level="warning")
    with BackgroundServer(build(cfg)) as url:
        code = loadtest_main(["--url", url, "--requests", "78", "--concurrency", "12", "--max-tokens", "4",
                              "--invalid-every", "3", "--stream-every", "5"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "0 failed; 26 invalid requests answered [400, 404, 413]" in out.out or "0 failed; 26 invalid requests answered [400, 404]" in out.out, out.out
    asyncio.get_event_loop_policy()  # nothing left running on this thread's loop
