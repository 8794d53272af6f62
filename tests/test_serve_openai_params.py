"""`chatforge serve`'s OpenAI parameters beyond plain sampling, driven by the official `openai` client:
log-probs (chat and completions shapes, values against a plain transformers forward), echo with
`max_tokens: 0` as lm-evaluation-harness sends it, penalties and min_p (equal to the sampler, whose
processors tests/test_sampling_processors.py checks by hand), the 400s naming each bad field, and the
/tokenize, /detokenize, /tokenizer_info, /metrics and /version endpoints."""

from __future__ import annotations

import json
import math
import urllib.request

import pytest
import torch

openai = pytest.importorskip("openai")

from chatforge.sampling import Sampler, SamplingConfig, chat_prompt  # noqa: E402
from chatforge.sampling.token_text import TokenText, byte_level_table  # noqa: E402
from chatforge.serve import ServeConfig  # noqa: E402
from chatforge.serve.server import BackgroundServer, build  # noqa: E402
from test_serve import assert_openai_error, post_raw  # noqa: E402
from tiny_models import make_tiny_model  # noqa: E402

MESSAGES = [{"role": "user", "content": "Tell me about the weather in the hills."}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    out = tmp_path_factory.mktemp("served_params")
    make_tiny_model(vocab_size=384, seed=3, tie_word_embeddings=False).save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def served(model_dir):
    cfg = ServeConfig(model_dir=str(model_dir), model_name="tiny", max_tokens=48, max_n=4, log_level="warning")
    app = build(cfg)
    with BackgroundServer(app) as url:
        yield url, app.state.server


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0] + "/v1", api_key="unused", max_retries=0, timeout=60)


def plain_logprobs(model, ids: list[int]) -> torch.Tensor:
    """(len(ids), vocab) log-softmax of plain transformers' logits: row t predicts token t + 1."""
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read().decode()


def test_chat_logprobs_have_openai_shape_and_the_models_values(client, served):
    engine = served[1].engine
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=10,
                                           logprobs=True, top_logprobs=3)
    prompt = chat_prompt(engine.tokenizer, MESSAGES)
    (sample,) = Sampler(engine.model, engine.tokenizer).generate([prompt], SamplingConfig(temperature=0, max_new_tokens=10))[0]
    shown = sample.token_ids[:-1] if isinstance(sample.stop_reason, int) else sample.token_ids
    content = reply.choices[0].logprobs.content
    assert len(content) == len(shown) > 0
    logp = plain_logprobs(engine.model, prompt + sample.token_ids)
    for t, (item, token) in enumerate(zip(content, shown)):
        row = logp[len(prompt) - 1 + t]
        assert item.logprob == pytest.approx(row[token].item(), abs=1e-4)
        values, ids = row.topk(3)
        assert [alt.logprob for alt in item.top_logprobs] == pytest.approx(values.tolist(), abs=1e-4)
        assert [alt.bytes for alt in item.top_logprobs] == [list(TokenText(engine.tokenizer).bytes_of(i)) for i in ids.tolist()]
        assert item.top_logprobs[0].logprob >= item.logprob - 1e-6  # greedy: the chosen token is the top one
    # The tokens' bytes spell the answer (multi-byte characters split over tokens included; this random
    # model also emits byte sequences that are not UTF-8, which the answer shows as U+FFFD, as the tokenizer decodes them).
    assert b"".join(bytes(item.bytes) for item in content).decode(errors="replace") == reply.choices[0].message.content
    assert reply.choices[0].logprobs.refusal is None
    plain = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=4)
    assert plain.choices[0].logprobs is None
    only_chosen = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=4, logprobs=True)
    assert all(item.top_logprobs == [] for item in only_chosen.choices[0].logprobs.content)


def test_echo_with_max_tokens_0_returns_the_prompts_logprobs(client, served):
    engine = served[1].engine
    text = "Once upon a time the wörld was small"
    reply = client.completions.create(model="tiny", prompt=text, max_tokens=0, echo=True, logprobs=2)
    ids = engine.tokenizer(text)["input_ids"]
    choice = reply.choices[0]
    assert choice.text == engine.tokenizer.decode(ids, skip_special_tokens=True) == text
    assert reply.usage.completion_tokens == 0 and reply.usage.prompt_tokens == len(ids)
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == len(ids)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    logp = plain_logprobs(engine.model, ids)
    tt = TokenText(engine.tokenizer)
    for t in range(1, len(ids)):
        assert lp.token_logprobs[t] == pytest.approx(logp[t - 1, ids[t]].item(), abs=1e-4)
        top2 = logp[t - 1].topk(2)
        expected = {tt.string_of(i): v for i, v in zip(top2.indices.tolist(), top2.values.tolist())}
        expected.setdefault(tt.string_of(ids[t]), logp[t - 1, ids[t]].item())  # the chosen token is always there
        assert lp.top_logprobs[t] == pytest.approx(expected, abs=1e-4)
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    assert lp.tokens[1] == text[lp.text_offset[1] : lp.text_offset[2]]
    # Without logprobs, echo returns the prompt's text and no log-probs.
    bare = client.completions.create(model="tiny", prompt=text, max_tokens=0, echo=True)
    assert bare.choices[0].text == text and bare.choices[0].logprobs is None


def test_lm_eval_loglikelihood_request(served):
    """The exact body lm-eval's `local-completions` sends for log-likelihoods, and its parsing:
    sum(token_logprobs[ctxlen:-1]) is log p(continuation | context)."""
    url, server = served
    context, continuation = [5, 40, 41, 42, 43], [44, 45, 46]
    other = [7, 60, 61, 62, 63, 64]
    body = {"model": "tiny", "prompt": [context + continuation, other], "temperature": 0, "max_tokens": 1,
            "logprobs": 1, "seed": 1234, "echo": True}
    status, out = post_raw(url + "/v1/completions", json.dumps(body).encode())
    assert status == 200, out
    choice = sorted(out["choices"], key=lambda c: c["index"])[0]
    ctxlen = len(context)
    logp = plain_logprobs(server.engine.model, context + continuation)
    expected = sum(logp[t - 1, (context + continuation)[t]].item() for t in range(ctxlen, ctxlen + len(continuation)))
    assert sum(choice["logprobs"]["token_logprobs"][ctxlen:-1]) == pytest.approx(expected, abs=1e-4)
    assert len(choice["logprobs"]["token_logprobs"]) == len(context + continuation) + 1  # + the one generated token
    greedy = all(logp[t - 1].argmax().item() == (context + continuation)[t] for t in range(ctxlen, ctxlen + len(continuation)))
    is_greedy = all(tok == max(top.values()) for tok, top in
                    zip(choice["logprobs"]["token_logprobs"][ctxlen:-1], choice["logprobs"]["top_logprobs"][ctxlen:-1]))
    assert is_greedy == greedy
    assert len(out["choices"]) == 2 and out["choices"][1]["logprobs"]["token_logprobs"][0] is None


def test_penalties_and_min_p_reach_the_sampler(client, served):
    engine = served[1].engine
    sampler = Sampler(engine.model, engine.tokenizer)
    prompt = chat_prompt(engine.tokenizer, MESSAGES)
    settings = [
        ({"presence_penalty": 1.2}, {"presence_penalty": 1.2}),
        ({"frequency_penalty": 0.8}, {"frequency_penalty": 0.8}),
        ({"extra_body": {"repetition_penalty": 1.5}}, {"repetition_penalty": 1.5}),
        ({"presence_penalty": -0.5, "frequency_penalty": 0.3, "extra_body": {"repetition_penalty": 1.2}},
         {"presence_penalty": -0.5, "frequency_penalty": 0.3, "repetition_penalty": 1.2}),
    ]
    baseline = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=24)
    changed = 0
    for kwargs, cfg in settings:
        reply = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=24, **kwargs)
        (expected,) = sampler.generate([prompt], SamplingConfig(temperature=0, max_new_tokens=24, **cfg))[0]
        assert reply.choices[0].message.content == expected.text
        changed += reply.choices[0].message.content != baseline.choices[0].message.content
    assert changed >= 1  # the penalties do change a greedy answer
    # min_p 1 keeps only the most likely token: any temperature and seed give the greedy answer.
    hot = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=1.8, seed=3, max_tokens=24,
                                         extra_body={"min_p": 1.0})
    assert hot.choices[0].message.content == baseline.choices[0].message.content
    seeded = dict(model="tiny", prompt="The hills", temperature=1.0, seed=11, max_tokens=12, n=2, extra_body={"min_p": 0.1})
    reply = client.completions.create(**seeded)
    expected = sampler.generate([engine.tokenizer("The hills")["input_ids"]],
                                SamplingConfig(temperature=1.0, seed=11, max_new_tokens=12, n=2, min_p=0.1))[0]
    assert [c.text for c in reply.choices] == [e.text for e in expected]


def test_every_listed_parameter_in_one_request(client):
    """The openai client with everything it can send to each endpoint at once."""
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "system", "content": "Be brief."}, *MESSAGES], max_completion_tokens=12,
        temperature=0.7, top_p=0.9, n=2, stop=["zz"], seed=5, presence_penalty=0.4, frequency_penalty=0.2,
        logprobs=True, top_logprobs=2, response_format={"type": "text"}, user="tester",
        extra_body={"top_k": 50, "min_p": 0.05, "repetition_penalty": 1.1},
    )
    assert len(reply.choices) == 2
    for choice in reply.choices:
        assert len(choice.logprobs.content) > 0 and all(len(i.top_logprobs) == 2 for i in choice.logprobs.content)
    text = client.completions.create(
        model="tiny", prompt=["The hills", "A river"], max_tokens=6, temperature=0.5, top_p=0.95, n=2, best_of=2,
        stop=["zz"], seed=9, presence_penalty=0.1, frequency_penalty=0.1, logprobs=3, echo=True, user="tester",
        extra_body={"top_k": 20, "min_p": 0.02, "repetition_penalty": 1.05},
    )
    assert len(text.choices) == 4
    for choice, prompt in zip(text.choices, ["The hills", "The hills", "A river", "A river"]):
        assert choice.text.startswith(prompt)
        assert choice.logprobs.token_logprobs[0] is None
        assert all(len(top) >= 3 for top in choice.logprobs.top_logprobs[1:])


def test_response_format_json_object_is_constrained(client):
    from chatforge.sampling.json_prefix import JsonPrefix

    for seed in range(3):
        reply = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=1.0, seed=seed, max_tokens=40,
                                               n=2, response_format={"type": "json_object"})
        for choice in reply.choices:
            text = choice.message.content
            assert text.lstrip().startswith("{") and JsonPrefix().feed_all(text.encode()), text
            if choice.finish_reason == "stop":
                assert isinstance(json.loads(text), dict)
    streamed = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=1.0, seed=1, max_tokens=40,
                                              response_format={"type": "json_object"}, stream=True)
    whole = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=1.0, seed=1, max_tokens=40,
                                           response_format={"type": "json_object"})
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == whole.choices[0].message.content


@pytest.mark.parametrize(("endpoint", "fields", "param"), [
    ("chat", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("chat", {"top_logprobs": 2}, "top_logprobs"),
    ("chat", {"presence_penalty": 2.5}, "presence_penalty"),
    ("chat", {"frequency_penalty": -2.01}, "frequency_penalty"),
    ("chat", {"repetition_penalty": 0}, "repetition_penalty"),
    ("chat", {"min_p": 1.5}, "min_p"),
    ("chat", {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema.schema"),
    ("chat", {"response_format": {"type": "yaml"}}, "response_format.type"),
    ("chat", {"logprobs": 1}, "logprobs"),
    ("text", {"logprobs": 21}, "logprobs"),
    ("text", {"max_tokens": 0}, "max_tokens"),
    ("text", {"echo": True, "stream": True}, "echo"),
    ("text", {"min_p": -0.1}, "min_p"),
])
def test_bad_values_are_400s_naming_the_field(served, endpoint, fields, param):
    url = served[0]
    base = ({"model": "tiny", "messages": MESSAGES} if endpoint == "chat" else {"model": "tiny", "prompt": "hi"})
    path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
    status, body = post_raw(url + path, json.dumps({**base, "max_tokens": 4, **fields}).encode())
    assert status == 400, body
    error = assert_openai_error(body)
    assert error["param"] == param and param.split(".")[0] in error["message"]


def test_tokenize_detokenize_and_tokenizer_info(served):
    url, server = served
    tokenizer = server.tokenizer
    status, out = post_raw(url + "/tokenize", json.dumps({"prompt": "Once upon a wörld"}).encode())
    ids = tokenizer("Once upon a wörld")["input_ids"]
    assert status == 200 and out == {"count": len(ids), "max_model_len": 128, "tokens": ids}
    status, out = post_raw(url + "/tokenize", json.dumps({"model": "tiny", "messages": MESSAGES, "return_token_strs": True}).encode())
    assert out["tokens"] == chat_prompt(tokenizer, MESSAGES)
    assert out["token_strs"] == tokenizer.convert_ids_to_tokens(out["tokens"])
    status, out = post_raw(url + "/detokenize", json.dumps({"tokens": ids}).encode())
    assert status == 200 and out == {"prompt": "Once upon a wörld"}
    for path, body, param in [("/tokenize", {}, "prompt"), ("/tokenize", {"prompt": "a", "messages": MESSAGES}, "prompt"),
                              ("/detokenize", {"tokens": [999]}, "tokens"), ("/detokenize", {"tokens": "a"}, "tokens"),
                              ("/tokenize", {"prompt": "a", "model": "gpt-4"}, "model")]:
        status, out = post_raw(url + path, json.dumps(body).encode())
        assert status in (400, 404) and assert_openai_error(out)["param"] == param
    status, text = get(url + "/tokenizer_info")
    info = json.loads(text)
    assert info["eos_token"] == tokenizer.eos_token and info["chat_template"] == tokenizer.chat_template
    assert info["vocab_size"] == len(tokenizer)


def test_token_bytes_table_is_gpt2s():
    table = byte_level_table()
    assert len(set(table.values())) == 256
    assert table[ord("A")] == "A" and table[ord(" ")] == "\u0120" and table[ord("\n")] == "\u010a"


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value}; checks every sample has a # TYPE before it."""
    typed: set[str] = set()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
        elif line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            name = key.split("{")[0]
            assert any(name == t or name.startswith(t + "_") for t in typed), line
            samples[key] = float(value)
    return samples


def test_metrics_count_requests_tokens_and_latency(client, served):
    url = served[0]
    _, before_text = get(url + "/metrics")
    before = parse_metrics(before_text)
    replies = [client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=5) for _ in range(3)]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=MESSAGES, extra_body={"min_p": 3})
    status, text = get(url + "/metrics")
    after = parse_metrics(text)
    key = 'chatforge_requests_total{route="/v1/chat/completions",status="200"}'
    assert after[key] - before.get(key, 0) == 3
    bad = 'chatforge_requests_total{route="/v1/chat/completions",status="400"}'
    assert after[bad] - before.get(bad, 0) == 1
    generated = sum(r.usage.completion_tokens for r in replies)
    assert after["chatforge_generation_tokens_total"] - before.get("chatforge_generation_tokens_total", 0) == generated
    assert after["chatforge_prompt_tokens_total"] - before.get("chatforge_prompt_tokens_total", 0) == sum(
        r.usage.prompt_tokens for r in replies)
    route = 'route="/v1/chat/completions"'
    buckets = [v for k, v in after.items() if k.startswith("chatforge_request_duration_seconds_bucket{" + route)]
    assert buckets == sorted(buckets) and buckets[-1] == after[f"chatforge_request_duration_seconds_count{{{route}}}"]
    assert after["chatforge_requests_in_flight"] == 1  # this /metrics request itself
    assert math.isfinite(after[f"chatforge_request_duration_seconds_sum{{{route}}}"])
    with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")


def test_version(served):
    import chatforge

    status, text = get(served[0] + "/version")
    assert status == 200 and json.loads(text)["version"] == chatforge.__version__
