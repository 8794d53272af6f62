"""`chatforge serve`: the OpenAI-compatible server driven by the official `openai` client on loopback.

One tiny model (random weights, the session's tiny tokenizer with a chat template) is saved to a
directory and served by uvicorn in a thread; the tests check chat, streaming, completions, the model
list, the OpenAI error shapes and limits, isolation of a failing request, the batching policy, and a
bounded load test of 50 concurrent requests.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest

openai = pytest.importorskip("openai")

from chatforge.sampling import Sampler, SamplingConfig, chat_prompt  # noqa: E402
from chatforge.serve import ServeConfig  # noqa: E402
from chatforge.serve.server import BackgroundServer, build  # noqa: E402
from tiny_models import make_tiny_model  # noqa: E402

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of Ruritania?"}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    out = tmp_path_factory.mktemp("served")
    # Untied embeddings: a tied random tiny model mostly repeats its last input token.
    make_tiny_model(vocab_size=384, seed=3, tie_word_embeddings=False).save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def served(model_dir):
    cfg = ServeConfig(model_dir=str(model_dir), model_name="tiny", max_tokens=48, max_n=4,
                      max_body_bytes=20_000, log_level="warning")
    app = build(cfg)  # loads the directory like the CLI does
    with BackgroundServer(app) as url:
        yield url, app.state.server


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0] + "/v1", api_key="unused", max_retries=0, timeout=60)


def post_raw(url: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def assert_openai_error(body: dict) -> dict:
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def test_models_list(client, model_dir):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    # Without --model-name the id is the directory's name.
    assert ServeConfig(model_dir=str(model_dir)).model_name is None
    from chatforge.serve.server import model_name

    assert model_name(ServeConfig(model_dir=str(model_dir))) == model_dir.name


def test_chat_greedy_equals_the_sampler(client, served):
    engine = served[1].engine
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=24)
    prompt = chat_prompt(engine.tokenizer, MESSAGES)
    (expected,) = Sampler(engine.model, engine.tokenizer).generate([prompt], SamplingConfig(temperature=0, max_new_tokens=24))[0]
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == "tiny"
    assert choice.message.role == "assistant"
    assert choice.message.content == expected.text and expected.text
    assert choice.finish_reason == expected.finish_reason
    assert reply.usage.prompt_tokens == len(prompt)
    assert reply.usage.completion_tokens == len(expected.token_ids)
    assert reply.usage.total_tokens == len(prompt) + len(expected.token_ids)


def test_streaming_concatenates_to_the_non_streamed_text(client):
    full = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=32)
    stream = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=32,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert sum(1 for p in pieces if p) > 1  # streamed in several pieces, not one
    assert "".join(pieces) == full.choices[0].message.content
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_stream_with_stop_string_never_sends_the_stop(client):
    full = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=32)
    text = full.choices[0].message.content
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    expected = text[: text.index(stop)]
    kept = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=32, stop=[stop])
    assert kept.choices[0].message.content == expected and kept.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=32,
                                            stop=[stop], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == expected


def test_n_samples_and_seed(client):
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, n=3, temperature=1.0, max_tokens=16, seed=5)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    again = client.chat.completions.create(model="tiny", messages=MESSAGES, n=3, temperature=1.0, max_tokens=16, seed=5)
    assert [c.message.content for c in reply.choices] == [c.message.content for c in again.choices]
    stream = client.chat.completions.create(model="tiny", messages=MESSAGES, n=2, temperature=1.0, max_tokens=8,
                                            stream=True)
    seen = {c.choices[0].index for c in stream if c.choices}
    assert seen == {0, 1}


def test_completions_raw_prompt(client, served):
    engine = served[1].engine
    reply = client.completions.create(model="tiny", prompt=["Once upon a time", "The river"], temperature=0,
                                      max_tokens=12)
    expected = Sampler(engine.model, engine.tokenizer).generate(
        ["Once upon a time", "The river"], SamplingConfig(temperature=0, max_new_tokens=12)
    )
    assert reply.object == "text_completion"
    assert [c.text for c in reply.choices] == [e[0].text for e in expected]
    streamed = client.completions.create(model="tiny", prompt="Once upon a time", temperature=0, max_tokens=12,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed) == expected[0][0].text


def test_errors_have_the_openai_shape(client, served):
    url = served[0]
    with pytest.raises(openai.BadRequestError) as too_many:
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=49)
    assert too_many.value.status_code == 400
    error = assert_openai_error(too_many.value.response.json())
    assert error["param"] == "max_tokens" and error["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match="n is 5"):
        client.chat.completions.create(model="tiny", messages=MESSAGES, n=5)
    with pytest.raises(openai.BadRequestError, match="context"):  # prompt + max_tokens > 128 positions
        client.completions.create(model="tiny", prompt=list(range(5, 100)), max_tokens=40)
    with pytest.raises(openai.BadRequestError) as too_long:  # the prompt alone fills the 128 positions
        client.completions.create(model="tiny", prompt=list(range(5, 140)), max_tokens=4)
    assert assert_openai_error(too_long.value.response.json())["param"] == "prompt"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert assert_openai_error(missing.value.response.json())["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: tools_x"):
        client.chat.completions.create(model="tiny", messages=MESSAGES, extra_body={"tools_x": 1})
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="tiny", messages=[{"role": "robot", "content": "hi"}])

    status, body = post_raw(url + "/v1/chat/completions", b'{"model": "tiny", "messages": [')
    assert status == 400 and assert_openai_error(body)["code"] == "invalid_json"
    status, body = post_raw(url + "/v1/chat/completions", b"[1, 2]")
    assert status == 400 and assert_openai_error(body)
    big = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x" * 30_000}]}).encode()
    status, body = post_raw(url + "/v1/chat/completions", big)
    assert status == 413 and assert_openai_error(body)["code"] == "request_too_large"
    status, body = post_raw(url + "/v1/nothing", b"{}")
    assert status == 404 and assert_openai_error(body)
    # The server is still fine after all of that.
    assert client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4).choices


def test_a_failing_generation_is_a_500_and_the_server_keeps_serving(client, served, monkeypatch):
    engine = served[1].engine
    original = engine.sampler.generate
    poison = engine.tokenizer("poison")["input_ids"]

    def generate(prompts, cfg=None, **kw):
        if any(p[-len(poison):] == poison for p in prompts):
            raise RuntimeError("boom")
        return original(prompts, cfg, **kw)

    monkeypatch.setattr(engine.sampler, "generate", generate)

    async def burst():
        aclient = openai.AsyncOpenAI(base_url=served[0] + "/v1", api_key="unused", max_retries=0, timeout=60)
        calls = [aclient.completions.create(model="tiny", prompt="fine", temperature=0, max_tokens=6) for _ in range(4)]
        calls.insert(2, aclient.completions.create(model="tiny", prompt="poison", temperature=0, max_tokens=6))
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(burst())
    assert isinstance(results[2], openai.InternalServerError) and "boom" in str(results[2])
    assert all(isinstance(r, openai.types.Completion) for i, r in enumerate(results) if i != 2)
    monkeypatch.undo()
    assert client.completions.create(model="tiny", prompt="fine", max_tokens=4).choices


def test_api_key(model_dir, served, monkeypatch):
    engine = served[1].engine
    monkeypatch.setenv("CHATFORGE_API_KEY", "s3cret")
    app = build(ServeConfig(model_dir=str(model_dir), model_name="tiny", log_level="warning"),
                engine.model, engine.tokenizer)
    with BackgroundServer(app) as url:
        with pytest.raises(openai.AuthenticationError) as denied:
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        assert assert_openai_error(denied.value.response.json())["type"] == "authentication_error"
        status, _ = post_raw(url + "/v1/completions", b'{"model": "tiny", "prompt": "a"}')
        assert status == 401
        good = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert good.completions.create(model="tiny", prompt="a", max_tokens=2).choices


def test_load_50_concurrent_requests(served):
    url, server = served
    before = server.engine.batched_calls

    async def run() -> list:
        aclient = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        calls = []
        for i in range(50):
            messages = [{"role": "user", "content": f"Question number {i}?"}]
            if i % 10 == 9:
                calls.append(_drain(await aclient.chat.completions.create(
                    model="tiny", messages=messages, max_tokens=16, temperature=0, stream=True)))
            else:
                calls.append(aclient.chat.completions.create(model="tiny", messages=messages, max_tokens=16,
                                                             temperature=0))
        return await asyncio.gather(*calls, return_exceptions=True)

    start = time.perf_counter()
    results = asyncio.run(run())
    seconds = time.perf_counter() - start
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures[:3]
    assert all((r.choices[0].message.content if not isinstance(r, str) else r) is not None for r in results)
    assert server.engine.batched_calls > before  # waiting requests were decoded together
    print(f"\n50 requests in {seconds:.2f} s = {50 / seconds:.1f} requests/s")


async def _drain(stream) -> str:
    return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])


def test_engine_batches_compatible_waiting_jobs(served):
    """Jobs waiting together with the same settings share one sampler call; seeded or other settings do not."""
    from chatforge.serve.engine import Job, ModelWorker

    real = served[1].engine
    engine = ModelWorker(real.model, real.tokenizer, max_batch=8)
    calls: list[int] = []
    original = engine.sampler.generate

    def generate(prompts, cfg=None, **kw):
        calls.append(len(prompts))
        return original(prompts, cfg, **kw)

    engine.sampler.generate = generate
    greedy = SamplingConfig(temperature=0, max_new_tokens=3)

    async def run():
        jobs = [Job.create([[5, 6, 7]], greedy, stream=False) for _ in range(3)]
        jobs.append(Job.create([[5, 6]], greedy.model_copy(update={"seed": 1}), stream=False))
        jobs.append(Job.create([[8, 9]], greedy.model_copy(update={"max_new_tokens": 2}), stream=False))
        jobs.append(Job.create([[8, 9], [10]], greedy, stream=False))
        for job in jobs:
            engine.submit(job)
        engine.start()  # everything is already waiting: one round
        try:
            return await asyncio.gather(*(job.future for job in jobs))
        finally:
            engine.stop()

    results = asyncio.run(run())
    assert calls == [5, 1, 1]  # 3 + 2 prompts of the same settings together, the seeded and the other alone
    assert engine.rounds == 1 and engine.batched_calls == 1
    assert [len(r.completions) for r in results] == [1, 1, 1, 1, 1, 2]
    assert all(len(r.completions[0][0].token_ids) == 3 for r in results[:3])
    assert all(r.prompt_logprobs is None for r in results)  # nothing echoed


def test_cli_help_and_print_config(model_dir, capsys):
    from chatforge.cli import main

    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: chatforge serve MODEL_DIR") and "max_batch" in out
    assert main(["serve", str(model_dir), "--port", "9001", "--model-name", "x", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "port: 9001" in out and "model_name: x" in out and f"model_dir: {model_dir}" in out
    assert main(["serve", str(model_dir), "--max-tokens", "0", "--print-config"]) == 2
    assert "max_tokens" in capsys.readouterr().err


def test_a_full_queue_is_a_429(served):
    from chatforge.serve.engine import Job, ModelWorker
    from chatforge.serve.protocol import APIError

    engine = ModelWorker(served[1].engine.model, served[1].engine.tokenizer, max_queue=1)  # not started

    async def run():
        engine.submit(Job.create([[5]], SamplingConfig(), stream=False))
        with pytest.raises(APIError) as full:
            engine.submit(Job.create([[5]], SamplingConfig(), stream=False))
        return full.value

    error = asyncio.run(run())
    assert error.status == 429 and error.body()["error"]["type"] == "rate_limit_error"


def test_a_client_leaving_mid_stream_does_not_hurt_the_server(client):
    stream = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=48, stream=True,
                                            extra_body={"top_k": 5})
    chunks = iter(stream)
    next(chunks), next(chunks)
    stream.close()
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, temperature=0)
    assert reply.choices[0].finish_reason in ("stop", "length")
