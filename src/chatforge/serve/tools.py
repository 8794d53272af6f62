"""Function calling on /v1/chat/completions: `tools`, `tool_choice`, answers with `message.tool_calls`,
and `tool` turns in the history, in OpenAI's shapes.

The prompt. The chat template renders the tools (a system turn listing them, `TOOLS_INTRO` and one
JSON line per tool), an assistant turn's calls as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`,
and tool results as `tool` turns (chatforge's `chatml`, tokenizer/templates.py). A template that knows
nothing of tools (one saved before them, or `llama3`/`user_bot`) gets the same text through its
messages instead: a first system message with the tool list, the calls written into the assistant's
content (`fallback_messages`); for chatml both give the same tokens.

The answer, by `tool_choice`:
- `none` (or no tools): the tools are left out of the prompt and the answer is text.
- `auto` (the default with tools): plain decoding; the answer's `<tool_call>...</tool_call>` blocks
  that hold a known function's name and arguments valid against its parameters become `tool_calls`
  (the text before the first is `content`); anything else stays text.
- `required` or `{"type": "function", "function": {"name"}}`: the prompt ends with the `<tool_call>`
  marker and decoding is constrained (response_format json_schema's automaton) to
  `{"name": NAME, "arguments": ARGS}` with ARGS valid against the function's parameters, so a call
  that ends (finish_reason "tool_calls") always parses and validates. With `required` and several
  tools, a first constrained pass picks the name (`{"name": one of the names}`), a second writes the
  arguments of the picked function. A call cut by max_tokens comes back as text, finish_reason "length".

Streaming requests with tools are decoded whole and sent as OpenAI's chunks at the end (a call's
arguments in one `tool_calls` delta).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from chatforge.sampling import SamplingConfig
from chatforge.sampling.json_prefix import JsonPrefix
from chatforge.sampling.json_schema import compile_schema
from chatforge.serve.protocol import (
    ChatCompletionRequest,
    FunctionDef,
    ToolChoiceFunction,
    chat_chunk,
    now,
    schema_problem,
)
from chatforge.tokenizer.templates import TOOLS_INTRO

MARKER, END = "<tool_call>", "</tool_call>"
NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}

# (content or None, finish_reason, logprobs object or None, tool_calls or None): one chat choice.
Choice = tuple[str | None, str, dict | None, list[dict] | None]
Decode = Callable[[list[int], SamplingConfig], Awaitable[list]]  # (prompt, cfg) -> the prompt's Completions


def mode(req: ChatCompletionRequest) -> str:
    """"none", "auto" or "forced" (required, or a named function)."""
    if not req.tools or req.tool_choice == "none":
        return "none"
    return "auto" if req.tool_choice in (None, "auto") else "forced"


def tools_problem(req: ChatCompletionRequest) -> tuple[str, str] | None:
    """(param, message) of the first tool-related field the server cannot serve, else None."""
    for i, message in enumerate(req.messages):
        problem = _message_problem(req, i, message)
        if problem is not None:
            return problem
    names = [t.function.name for t in req.tools or []]
    if len(set(names)) < len(names):
        return "tools", f"tools: the function name {next(n for n in names if names.count(n) > 1)!r} is given twice"
    for i, tool in enumerate(req.tools or []):
        if tool.function.parameters is not None:
            problem = schema_problem(tool.function.parameters, f"tools.{i}.function.parameters")
            if problem is not None:
                return problem
    if req.tool_choice is not None and req.tool_choice != "none" and not req.tools:
        return "tool_choice", f"tool_choice {_choice_text(req.tool_choice)} needs tools"
    if isinstance(req.tool_choice, ToolChoiceFunction) and req.tool_choice.function.name not in names:
        return ("tool_choice.function.name", f"tool_choice.function.name {req.tool_choice.function.name!r} is not "
                f"among the tools ({', '.join(names)})")
    if mode(req) == "forced" and req.response_format is not None and req.response_format.type != "text":
        return "response_format", "response_format cannot be combined with a forced tool call (its arguments are the JSON)"
    return None


def _message_problem(req: ChatCompletionRequest, i: int, message) -> tuple[str, str] | None:
    if message.tool_calls and message.role != "assistant":
        return f"messages.{i}.tool_calls", f"messages.{i}.tool_calls: only assistant messages carry tool calls"
    if message.role != "tool":
        if message.tool_call_id is not None:
            return f"messages.{i}.tool_call_id", f"messages.{i}.tool_call_id: only tool messages answer a call"
        return None
    if message.tool_call_id is None:
        return f"messages.{i}.tool_call_id", f"messages.{i}.tool_call_id is missing: a tool message answers a call by its id"
    earlier = {c.id for m in req.messages[:i] for c in m.tool_calls or []}
    if message.tool_call_id not in earlier:
        return (f"messages.{i}.tool_call_id", f"messages.{i}.tool_call_id {message.tool_call_id!r} answers no tool call "
                "of an earlier assistant message")
    return None


def _choice_text(choice) -> str:
    return json.dumps(choice) if isinstance(choice, str) else json.dumps(choice.model_dump())


# -- the prompt ----------------------------------------------------------------------------------------

def tool_dicts(req: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    """The tools as the template gets them (OpenAI's JSON), or None when the answer may not call one."""
    if mode(req) == "none":
        return None
    return [t.model_dump(exclude_none=True) for t in req.tools]


def render_chat(tokenizer, messages: list[dict[str, Any]], functions: list[dict[str, Any]] | None,
                add_generation_prompt: bool = True) -> list[int]:
    """Token ids of the conversation and tools under the tokenizer's template (through its messages
    when the template knows nothing of tools). Jinja's errors propagate (the caller answers 400)."""
    if (functions or any("tool_calls" in m for m in messages)) and not template_knows_tools(tokenizer.chat_template):
        messages, functions = fallback_messages(messages, functions), None
    return list(tokenizer.apply_chat_template(messages, tools=functions, add_generation_prompt=add_generation_prompt,
                                              tokenize=True, return_dict=False))


def template_knows_tools(template: str | None) -> bool:
    return bool(template) and "tools" in template and "tool_calls" in template


def fallback_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The conversation for a template without tools: the tool list as a first system message and each
    call written into its assistant's content, the text chatml's own tool blocks produce."""
    out = [{"role": "system", "content": tools_text(tools)}] if tools else []
    for message in messages:
        if message.get("tool_calls"):
            calls = "".join(call_text(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"])
            message = {k: v for k, v in message.items() if k != "tool_calls"} | {"content": (message["content"] or "") + calls}
        out.append(message)
    return out


def tools_text(tools: list[dict[str, Any]]) -> str:
    return TOOLS_INTRO + "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)


def call_text(name: str, arguments: Any) -> str:
    return MARKER + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + END


# -- forced calls: the constrained schemas --------------------------------------------------------------

def call_schema(function: FunctionDef) -> dict[str, Any]:
    """`{"name": NAME, "arguments": PARAMETERS}` as a schema; the parameters' $defs move to its root."""
    parameters = copy.deepcopy(function.parameters) if function.parameters is not None else dict(NO_ARGUMENTS)
    defs = {key: parameters.pop(key) for key in ("$defs", "definitions") if key in parameters}
    return {"type": "object", "properties": {"name": {"const": function.name}, "arguments": parameters},
            "required": ["name", "arguments"], "additionalProperties": False, **defs}


def name_schema(names: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": {"name": {"enum": names}}, "required": ["name"], "additionalProperties": False}


def forced_name(req: ChatCompletionRequest) -> str | None:
    """The function every answer calls, when the request fixes it (a named choice, or one tool)."""
    if isinstance(req.tool_choice, ToolChoiceFunction):
        return req.tool_choice.function.name
    return req.tools[0].function.name if len(req.tools) == 1 else None


async def forced_choices(req: ChatCompletionRequest, prompt: list[int], cfg: SamplingConfig, decode: Decode,
                         logprobs: Callable[[Any], dict | None]) -> tuple[list[Choice], int]:
    """The choices of a forced call (`prompt` ends with the marker), and the tokens generated in all."""
    functions = {t.function.name: t.function for t in req.tools}
    generated = 0
    name = forced_name(req)
    if name is not None:
        picks: list[str | None] = [name] * cfg.n
    else:  # a first pass picks each choice's function; a cut one (max_tokens) stays a cut answer
        firsts = await decode(prompt, _constrained(cfg, name_schema(list(functions)), cfg.n))
        generated += sum(len(c.token_ids) for c in firsts)
        picks = [json.loads(c.text)["name"] if c.finish_reason == "stop" else None for c in firsts]
    choices: list[Choice | None] = [None] * cfg.n
    for i, pick in enumerate(picks):
        if pick is None:
            choices[i] = (firsts[i].text, "length", logprobs(firsts[i]), None)
    for pick, count in Counter(p for p in picks if p is not None).items():
        samples = await decode(prompt, _constrained(cfg, call_schema(functions[pick]), count))
        generated += sum(len(c.token_ids) for c in samples)
        slots = [i for i, p in enumerate(picks) if p == pick]
        for i, sample in zip(slots, samples):
            if sample.finish_reason == "stop":
                call = json.loads(sample.text)
                choices[i] = (None, "tool_calls", logprobs(sample), [tool_call(call["name"], call["arguments"])])
            else:
                choices[i] = (sample.text, "length", logprobs(sample), None)
    return choices, generated


def _constrained(cfg: SamplingConfig, schema: dict[str, Any], n: int) -> SamplingConfig:
    return SamplingConfig(**(cfg.model_dump() | {"response_format": "json_schema", "json_schema": schema, "n": n}))


# -- answers -----------------------------------------------------------------------------------------

def tool_call(name: str, arguments: Any) -> dict[str, Any]:
    """OpenAI's `tool_calls` item; `arguments` is a JSON text."""
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


def parse_calls(text: str, req: ChatCompletionRequest) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool_calls) of an `auto` answer: its well-formed `<tool_call>` blocks, in order, until
    the first block that is not a valid call (that one and the rest stay text)."""
    functions = {t.function.name: t.function for t in req.tools}
    calls, first, pos = [], None, 0
    while (start := text.find(MARKER, pos)) >= 0:
        end = text.find(END, start)
        body = text[start + len(MARKER): end if end >= 0 else len(text)]
        call = _valid_call(body.strip(), functions)
        if call is None:
            break
        first = start if first is None else first
        calls.append(tool_call(*call))
        pos = end + len(END) if end >= 0 else len(text)
    if not calls:
        return text, []
    return text[:first].strip() or None, calls


def _valid_call(body: str, functions: dict[str, FunctionDef]) -> tuple[str, Any] | None:
    """(name, arguments) when `body` is `{"name": a tool, "arguments": valid against its parameters}`."""
    try:
        call = json.loads(body)
    except ValueError:
        return None
    if not isinstance(call, dict) or call.get("name") not in functions:
        return None
    call.setdefault("arguments", {})
    state = JsonPrefix(compile_schema(call_schema(functions[call["name"]])))
    if not (state.feed_all(json.dumps(call).encode()) and state.complete):
        return None
    return call["name"], call["arguments"]


async def sse_replay(rid: str, model: str, choices: list[Choice], usage: dict[str, int] | None) -> AsyncIterator[str]:
    """A decoded answer as OpenAI's chat chunks: per choice the role, its content, its calls (one delta
    with every call, arguments whole), the finish reason; then the usage chunk when asked, and [DONE]."""
    created = now()

    def event(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: dict | None = None) -> str:
        return f"data: {json.dumps(chat_chunk(rid, created, model, index, delta, finish, logprobs))}\n\n"

    for index, (content, finish, logprobs, calls) in enumerate(choices):
        yield event(index, {"role": "assistant", "content": ""})
        if content:
            yield event(index, {"content": content}, logprobs=logprobs)
        if calls:
            delta = {"tool_calls": [{"index": k, **call} for k, call in enumerate(calls)]}
            yield event(index, delta, logprobs=None if content else logprobs)
        yield event(index, {}, finish)
    if usage is not None:
        data = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": usage}
        yield f"data: {json.dumps(data)}\n\n"
    yield "data: [DONE]\n\n"
