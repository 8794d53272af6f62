"""Function calling: the chat template's tool text (by hand), the fallback for templates without tools
(same tokens as chatml's own), forced calls from a tiny random model (they parse and match the
function's parameters), the response and chunk shapes, `auto` parsing, tool turns in the history,
and the 400s naming each bad field."""

from __future__ import annotations

import copy
import json

import pytest

openai = pytest.importorskip("openai")

from chatforge.serve.protocol import ChatCompletionRequest, parse_request  # noqa: E402
from chatforge.serve.tools import fallback_messages, parse_calls  # noqa: E402
from chatforge.tokenizer.templates import CHATML, TOOLS_INTRO  # noqa: E402
from schema_validator import valid, whitespace_tokens  # noqa: E402
from served_tiny import openai_client, serve_tiny  # noqa: E402
from test_serve import assert_openai_error, post_raw  # noqa: E402

WEATHER = {"type": "object", "properties": {"city": {"enum": ["Oslo", "Lima"]}, "days": {"type": "integer"}},
           "required": ["city", "days"], "additionalProperties": False}
ZONE = {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": ZONE}},
]
ASK = [{"role": "user", "content": "Weather in Oslo?"}]
# chatml as it was before tools (a tokenizer saved then still carries it)
OLD_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
HISTORY = ASK + [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\", \"days\": 2}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 3}"},
]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_tokenizer):
    """A tiny random chat model served on a free port: (url, Server)."""
    # 1024 positions: the tool list alone is ~400 tokens of this 384-token vocabulary
    with serve_tiny(tmp_path_factory.mktemp("served_tools"), tiny_tokenizer, 120, max_position_embeddings=1024) as served:
        yield served


@pytest.fixture(scope="module")
def client(served):
    return openai_client(served[0])


def render(tokenizer, template: str, messages: list[dict], tools=None) -> str:
    return tokenizer.apply_chat_template(messages, tools=tools, chat_template=template, tokenize=False,
                                         add_generation_prompt=True)


# -- the template ----------------------------------------------------------------------------------------

def test_chatml_writes_tools_calls_and_results(tiny_tokenizer):
    messages = [{"role": "user", "content": "Q"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]},
                {"role": "tool", "tool_call_id": "c", "content": "7"}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    expected = (
        "<|im_start|>system\n" + TOOLS_INTRO
        + '{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}<|im_end|>\n'
        "<|im_start|>user\nQ<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call><|im_end|>\n'
        "<|im_start|>tool\n7<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render(tiny_tokenizer, CHATML, messages, tools) == expected
    assert TOOLS_INTRO.startswith("You can call these functions.") and TOOLS_INTRO.endswith("</tool_call>.\n")


def test_chatml_without_tools_is_unchanged(tiny_tokenizer):
    chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"},
            {"role": "user", "content": "Q2"}]
    assert render(tiny_tokenizer, CHATML, chat) == render(tiny_tokenizer, OLD_CHATML, chat)
    # the answer-only mask still covers exactly the answer and its <|im_end|>
    new = tiny_tokenizer.apply_chat_template(chat[:3], chat_template=CHATML, return_dict=True, return_assistant_tokens_mask=True)
    old = tiny_tokenizer.apply_chat_template(chat[:3], chat_template=OLD_CHATML, return_dict=True, return_assistant_tokens_mask=True)
    assert new["input_ids"] == old["input_ids"] and new["assistant_masks"] == old["assistant_masks"]


def test_fallback_gives_a_template_without_tools_the_same_text(tiny_tokenizer):
    req = parse_request(ChatCompletionRequest, {"model": "m", "messages": HISTORY, "tools": TOOLS})
    messages = [m.as_template_message() for m in req.messages]
    tools = [t.model_dump(exclude_none=True) for t in req.tools]
    native = render(tiny_tokenizer, CHATML, copy.deepcopy(messages), tools)
    assert render(tiny_tokenizer, OLD_CHATML, fallback_messages(messages, tools)) == native
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}}</tool_call><|im_end|>\n' \
           '<|im_start|>tool\n{"temp": 3}<|im_end|>\n<|im_start|>assistant\n' in native


# -- auto: parsing an answer ---------------------------------------------------------------------------------

def test_parse_calls_takes_valid_calls_and_leaves_the_rest_as_text():
    req = parse_request(ChatCompletionRequest, {"model": "m", "messages": ASK, "tools": TOOLS})
    content, calls = parse_calls('Checking. <tool_call>{"name": "get_weather", "arguments": {"city": "Lima", "days": 1}}'
                                 '</tool_call><tool_call>{"arguments": {"zone": "CET"}, "name": "get_time"}', req)
    assert content == "Checking."
    assert [(c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("function", "get_weather", {"city": "Lima", "days": 1}), ("function", "get_time", {"zone": "CET"})]
    assert all(c["id"].startswith("call_") for c in calls) and calls[0]["id"] != calls[1]["id"]
    for text in ['<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "days": 1}}</tool_call>',  # enum
                 '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>',  # required
                 '<tool_call>{"name": "nope", "arguments": {}}</tool_call>', '<tool_call>{"name": "get_time",',
                 "no call here"]:
        assert parse_calls(text, req) == (text, []), text
    # a call with only the marker's text before it has no content
    assert parse_calls('<tool_call>{"name": "get_time", "arguments": {"zone": "UTC"}}</tool_call>', req)[0] is None


# -- forced calls on the tiny model ----------------------------------------------------------------------------

@pytest.mark.parametrize("choice", [{"type": "function", "function": {"name": "get_weather"}}, "required"])
def test_forced_calls_parse_and_match_the_parameters(client, served, choice):
    names, calls = set(), 0
    for seed in range(1):
        reply = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice=choice,
                                               temperature=1.0, seed=seed, n=4, logit_bias=no_spaces(served))
        for c in reply.choices:
            if c.finish_reason == "length":  # cut by max_tokens: the text so far, no call
                assert c.message.tool_calls is None and c.message.content
                continue
            calls += 1
            assert c.finish_reason == "tool_calls" and c.message.content is None and c.message.role == "assistant"
            (call,) = c.message.tool_calls
            assert call.type == "function" and call.id.startswith("call_")
            schema = {"get_weather": WEATHER, "get_time": ZONE}[call.function.name]
            arguments = json.loads(call.function.arguments)
            assert valid(arguments, schema), arguments
            names.add(call.function.name)
        assert reply.usage.completion_tokens > 0
    assert calls >= 3
    if choice != "required":
        assert names == {"get_weather"}


def no_spaces(served) -> dict[str, int]:
    """logit_bias banning whitespace-only tokens: this random model would spend its tokens on them."""
    return {str(i): -100 for i in whitespace_tokens(served[1].tokenizer)}


def test_forced_call_streams_as_openai_chunks(client, served):
    kwargs = dict(model="tiny", messages=ASK, tools=TOOLS, tool_choice="required", temperature=1.0, seed=5,
                  logit_bias=no_spaces(served))
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    deltas = [ch for c in chunks for ch in c.choices]
    assert deltas[0].delta.role == "assistant" and deltas[-1].finish_reason == "tool_calls"
    (call,) = [t for d in deltas for t in d.delta.tool_calls or []]
    assert call.index == 0 and call.type == "function"
    expected = whole.choices[0].message.tool_calls[0].function
    assert (call.function.name, call.function.arguments) == (expected.name, expected.arguments)
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_auto_and_none_answer_with_text_shapes(client, served):
    auto = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, temperature=0, max_tokens=12)
    plain = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=12)
    without = client.chat.completions.create(model="tiny", messages=ASK, temperature=0, max_tokens=12)
    # this random model writes no call: text, and "none" leaves the tools out of the prompt
    assert auto.choices[0].message.tool_calls is None and auto.choices[0].finish_reason in ("stop", "length")
    assert auto.usage.prompt_tokens > plain.usage.prompt_tokens == without.usage.prompt_tokens
    assert plain.choices[0].message.content == without.choices[0].message.content


def test_history_with_tool_turns_reaches_the_prompt(client, served):
    reply = client.chat.completions.create(model="tiny", messages=HISTORY, tools=TOOLS, temperature=0, max_tokens=4)
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
    server = served[1]
    req = parse_request(ChatCompletionRequest, {"model": "tiny", "messages": HISTORY, "tools": TOOLS})
    text = server.tokenizer.decode(server.chat_prompt_ids(req))
    assert text.endswith('<|im_start|>assistant\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}}'
                         '</tool_call><|im_end|>\n<|im_start|>tool\n{"temp": 3}<|im_end|>\n<|im_start|>assistant\n')


def test_tokenize_counts_the_prompt_with_its_tools(served):
    server = served[1]
    req = parse_request(ChatCompletionRequest, {"model": "tiny", "messages": HISTORY, "tools": TOOLS})
    status, raw = post_raw(served[0] + "/tokenize", json.dumps({"messages": HISTORY, "tools": TOOLS}).encode())
    assert status == 200 and raw["tokens"] == server.chat_prompt_ids(req)
    status, raw = post_raw(served[0] + "/tokenize", json.dumps({"prompt": "x", "tools": TOOLS}).encode())
    assert status == 400 and assert_openai_error(raw)["param"] == "tools"


@pytest.mark.parametrize(("fields", "param", "words"), [
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice.function.name", "not among the tools"),
    ({"tools": None, "tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "x": {"type": "string", "not": {"const": "a"}}}}}}]}, "tools.0.function.parameters.properties.x.not", "unsupported keyword 'not'"),
    ({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools.0.type", "function"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools.0.function.name", "pattern"),
    ({"tools": TOOLS + TOOLS[:1]}, "tools", "given twice"),
    ({"tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format", "forced tool call"),
    ({"tool_choice": "sometimes"}, "tool_choice", "tool_choice"),
    ({"messages": ASK + [{"role": "tool", "content": "3"}]}, "messages.1.tool_call_id", "is missing"),
    ({"messages": HISTORY[:2] + [{"role": "tool", "tool_call_id": "call_9", "content": "3"}]}, "messages.2.tool_call_id",
     "answers no tool call"),
    ({"messages": [{"role": "user", "content": "x", "tool_call_id": "call_1"}]}, "messages.0.tool_call_id", "only tool messages"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": HISTORY[1]["tool_calls"]}]}, "messages.0.tool_calls",
     "only assistant"),
])
def test_bad_tool_fields_are_400s_naming_them(served, fields, param, words):
    body = {"model": "tiny", "messages": ASK, "max_tokens": 4, "tools": TOOLS, **fields}
    body = {k: v for k, v in body.items() if v is not None}
    status, raw = post_raw(served[0] + "/v1/chat/completions", json.dumps(body).encode())
    assert status == 400, raw
    error = assert_openai_error(raw)
    assert error["param"] == param and words in error["message"] and param.split(".")[0] in error["message"], error
