"""The OpenAI wire format: request bodies (pydantic), error objects, and response/chunk builders.

Request models forbid unknown fields, as the OpenAI API does ("Unrecognized request argument"), but
accept the common fields other clients send with neutral values (`logit_bias: {}`, `user`, ...).
`logit_bias` maps token ids (as strings, JSON's only keys) to biases in [-100, 100], at most
`MAX_LOGIT_BIAS` of them; the ids are checked against the vocabulary when the request is served.
`response_format: {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}` is checked
against the subset constrained decoding guarantees (sampling/json_schema.py) here, so a schema with
an unsupported keyword is a 400 naming it. `tools`/`tool_choice` and tool messages are in tools.py.

`top_k`, `min_p` and `repetition_penalty` are extensions (vLLM spells them the same way); the openai
client sends them through `extra_body`.

Log-probs follow OpenAI's two shapes: chat `choices[i].logprobs = {"content": [{"token", "logprob",
"bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}], "refusal": null}` and completions
`choices[i].logprobs = {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator

MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 256
MAX_LOGIT_BIAS = 300  # entries per request (OpenAI's documented limit is 300 too)
MAX_TOOLS = 128  # functions per request (OpenAI's limit)

# Integers are strict (JSON `true` is not 1) and bounded, so no request reaches the sampler or torch
# with a value they cannot hold: a seed is a signed 64-bit integer, as `SamplingConfig` stores it.
Count = Annotated[int, Strict(), Field(ge=1, le=2**31 - 1)]
TokenId = Annotated[int, Strict(), Field(ge=-(2**31), le=2**31 - 1)]  # checked against the vocabulary later
Seed = Annotated[int, Strict(), Field(ge=-(2**63), le=2**63 - 1)]
Flag = Annotated[bool, Strict()]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
TopLogprobs = Annotated[int, Strict(), Field(ge=0, le=20)]
Bias = Annotated[float, Field(ge=-100.0, le=100.0)]
Name = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]  # OpenAI's rule for schema and function names


class APIError(Exception):
    """An error answered as OpenAI's `{"error": {"message", "type", "param", "code"}}` with `status`."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error", 408: "timeout",
             405: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
             429: "rate_limit_error", 500: "server_error", 503: "server_error"}

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        kind = self.TYPES.get(self.status, "invalid_request_error" if self.status < 500 else "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Request):
    include_usage: Flag = False


class ContentPart(_Request):
    type: Literal["text"]
    text: str


class CalledFunction(_Request):
    name: str
    arguments: str  # a JSON text, as OpenAI sends it


class ToolCall(_Request):
    id: str
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # assistant turns that called tools
    tool_call_id: str | None = None  # tool turns: the call this is the result of

    def as_template_message(self) -> dict[str, Any]:
        """`{"role", "content"}` for the chat template; text parts are joined, `developer` reads as `system`.
        An assistant's tool calls come as `tool_calls` with the arguments parsed (the template writes them
        as JSON); a tool result keeps its `tool_call_id`."""
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": content}
        if self.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.function.name, "arguments": _arguments(c.function.arguments)}}
                                     for c in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


def _arguments(text: str) -> Any:
    """A call's arguments as the template writes them: the parsed object, or the text when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class FunctionDef(_Request):
    name: Name
    description: str | None = None
    parameters: dict[str, Any] | None = None  # JSON Schema of the arguments; none = no arguments
    strict: Flag | None = None


class Tool(_Request):
    type: Literal["function"]
    function: FunctionDef


class FunctionName(_Request):
    name: str


class ToolChoiceFunction(_Request):
    type: Literal["function"]
    function: FunctionName


class JsonSchemaFormat(_Request):
    name: Name
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: Flag | None = None  # output always matches the schema, strict or not (docs/serving.md)


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def unsupported(self) -> tuple[str, str] | None:
        if self.type != "json_schema":
            return ("response_format.json_schema", "response_format.json_schema is given only with type json_schema") if self.json_schema else None
        if self.json_schema is None:
            return "response_format.json_schema", "response_format type json_schema needs json_schema: {\"name\", \"schema\"}"
        if self.json_schema.schema_ is None:
            return "response_format.json_schema.schema", "response_format.json_schema.schema is missing: the schema to constrain the output to"
        return schema_problem(self.json_schema.schema_, "response_format.json_schema.schema")


def schema_problem(schema: dict[str, Any], param: str) -> tuple[str, str] | None:
    """(param, message) when `schema` is outside what constrained decoding guarantees, else None."""
    from chatforge.sampling.json_schema import SchemaError, compile_schema

    try:
        compile_schema(schema)
    except SchemaError as exc:
        return (f"{param}.{exc.path}" if exc.path else param), (f"{param}.{exc}" if exc.path else f"{param}: {exc}")
    return None


class _Sampling(_Request):
    """Fields shared by both endpoints; None means "the default", as some clients send nulls."""

    model: str
    max_tokens: Count | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: Annotated[int, Strict(), Field(ge=0, le=2**31 - 1)] | None = None
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repetition_penalty: float | None = Field(None, gt=0.0, le=100.0)
    response_format: ResponseFormat | None = None
    n: Count | None = None
    stop: str | list[str] | None = None
    seed: Seed | None = None
    stream: Flag | None = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, Bias] | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop sequences")
        if any(s == "" or len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"stop sequences must be 1 to {MAX_STOP_CHARS} characters")
        return stops

    def unsupported(self) -> tuple[str, str] | None:
        """(param, message) of the first field set to something this server cannot do, else None."""
        if self.response_format is not None:
            problem = self.response_format.unsupported()
            if problem is not None:
                return problem
        if self.logit_bias:
            if len(self.logit_bias) > MAX_LOGIT_BIAS:
                return "logit_bias", f"logit_bias has {len(self.logit_bias)} entries; at most {MAX_LOGIT_BIAS}"
            bad = next((k for k in self.logit_bias if not (k.isascii() and k.isdigit() and len(k) <= 10)), None)
            if bad is not None:
                return "logit_bias", f"logit_bias keys are token ids (non-negative integers as strings), got {bad!r}"
        return None

    def token_bias(self) -> dict[int, float]:
        return {int(k): v for k, v in (self.logit_bias or {}).items()}


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: Count | None = None
    logprobs: Flag | None = None
    top_logprobs: TopLogprobs | None = None
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceFunction | None = None
    parallel_tool_calls: Flag | None = None

    def unsupported(self) -> tuple[str, str] | None:
        from chatforge.serve.tools import tools_problem

        if self.top_logprobs is not None and not self.logprobs:
            return "top_logprobs", "top_logprobs needs logprobs: true"
        return tools_problem(self) or super().unsupported()


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[TokenId] | list[list[TokenId]]
    # 0 only with echo: score the prompt, generate nothing (lm-eval's log-likelihood requests).
    max_tokens: Annotated[int, Strict(), Field(ge=0, le=2**31 - 1)] | None = None
    echo: Flag | None = False
    suffix: str | None = None
    best_of: Count | None = None
    logprobs: TopLogprobs | None = None  # OpenAI allows up to 5, vLLM up to 20

    def unsupported(self) -> tuple[str, str] | None:
        if self.max_tokens == 0 and not self.echo:
            return "max_tokens", "max_tokens 0 generates nothing; it is allowed only with echo: true (to score the prompt)"
        if self.stream and self.echo:
            return "echo", "echo with stream: true is not supported by this server (ask without stream)"
        if self.suffix:
            return "suffix", "suffix is not supported by this server"
        if self.best_of not in (None, 1, self.n or 1):
            return "best_of", "best_of is not supported by this server (use n)"
        return super().unsupported()


def parse_request(cls: type[_Request], data: Any) -> Any:
    """Validate a JSON body into `cls`, or raise a 400 `APIError` naming the first bad field."""
    if not isinstance(data, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    try:
        request = cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = _param(err["loc"], data, err["type"] == "missing")
        if err["type"] == "extra_forbidden":
            raise APIError(400, f"Unrecognized request argument supplied: {param}", param=param) from None
        if err["type"] == "missing":
            raise APIError(400, f"Missing required parameter: {param!r}", param=param, code="missing_required_parameter") from None
        raise APIError(400, f"Invalid value for {param!r}: {err['msg']}", param=param, code="invalid_value") from None
    problem = request.unsupported()
    if problem is not None:
        raise APIError(400, problem[1], param=problem[0], code="unsupported_parameter")
    return request


def _param(loc: tuple, data: Any, missing: bool) -> str | None:
    """The field path of a validation error, as the client wrote it: pydantic also names the union
    alternative it tried (`tool_choice.literal['none','auto']`), which is not a field and is left out."""
    kept, node = [], data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif not (missing and i == len(loc) - 1):  # a missing field is named though the body lacks it
            continue
        kept.append(str(part))
    return ".".join(kept) or None


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_response(rid: str, model: str, choices: list[tuple], usage_: dict[str, int]) -> dict[str, Any]:
    """`chat.completion` with one choice per (text, finish_reason, logprobs object or None[, tool_calls])."""
    items = []
    for i, (text, reason, logprobs, *calls) in enumerate(choices):
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls and calls[0]:
            message["tool_calls"] = calls[0]
        items.append({"index": i, "message": message, "logprobs": logprobs, "finish_reason": reason})
    return {"id": rid, "object": "chat.completion", "created": now(), "model": model, "choices": items,
            "usage": usage_, "system_fingerprint": None}


def completion_response(rid: str, model: str, choices: list[tuple[str, str, dict | None]], usage_: dict[str, int]) -> dict[str, Any]:
    """`text_completion` with one choice per (text, finish_reason, logprobs object or None)."""
    items = [
        {"index": i, "text": text, "logprobs": logprobs, "finish_reason": reason}
        for i, (text, reason, logprobs) in enumerate(choices)
    ]
    return {"id": rid, "object": "text_completion", "created": now(), "model": model, "choices": items,
            "usage": usage_}


def chat_chunk(rid: str, created: int, model: str, index: int, delta: dict[str, Any], finish: str | None,
               logprobs: dict | None = None) -> dict:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None,
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}


def completion_chunk(rid: str, created: int, model: str, index: int, text: str, finish: str | None,
                     logprobs: dict | None = None) -> dict:
    return {"id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}]}
