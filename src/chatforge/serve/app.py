"""The HTTP side: a Starlette app with OpenAI's routes, request checks, and SSE streaming.

Handlers run on uvicorn's event loop; they parse and check the request (size, schema, model id,
limits), render the prompt, and hand a `Job` to the `ModelWorker`'s worker thread. Every failure is
answered with an OpenAI error object; nothing a request does can stop the server.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from chatforge.data.safe_json import JsonRejected, decode_json
from chatforge.sampling import SamplingConfig, max_positions
from chatforge.sampling.token_text import TokenText
from chatforge.serve import tools
from chatforge.serve.chat_page import chat_page
from chatforge.serve.config import ServeConfig
from chatforge.serve.engine import Job, JobResult, ModelWorker
from chatforge.serve.logprob_objects import (
    chat_entries,
    chat_logprobs,
    completion_chunk_logprobs,
    completion_logprobs,
)
from chatforge.serve.metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from chatforge.serve.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    new_id,
    now,
    parse_request,
    usage,
)
from chatforge.serve.tokenize import detokenize, tokenize, tokenizer_info

logger = logging.getLogger("chatforge.serve")


class Server:
    """Request handling for one model: checks, prompt rendering, and the round trip to the engine."""

    def __init__(self, engine: ModelWorker, cfg: ServeConfig, model_name: str):
        self.engine = engine
        self.cfg = cfg
        self.model_name = model_name
        self.tokenizer = engine.tokenizer
        self.limit = max_positions(engine.model)
        self.created = now()
        self.token_text = TokenText(self.tokenizer)
        self.metrics = Metrics(ROUTES)

    # -- checks -----------------------------------------------------------------------------------

    def check_auth(self, request: Request) -> None:
        if not self.cfg.api_key:
            return
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(token.encode(), self.cfg.api_key.encode()):
            raise APIError(401, "Incorrect or missing API key (send `Authorization: Bearer KEY`)", code="invalid_api_key")

    async def read_json(self, request: Request) -> Any:
        limit = self.cfg.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"request body of {declared} bytes is over the limit of {limit}", code="request_too_large")
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise APIError(413, f"request body is over the limit of {limit} bytes", code="request_too_large")
        except ClientDisconnect:  # gone, or closed by the read deadline (serve/connections.py)
            raise APIError(CLIENT_GONE, "the client closed the connection before the body ended",
                           code="client_closed_request") from None
        # Depth, number size and lone surrogates are checked here, once for every endpoint: a body
        # of 200k `[` or a `\ud800` prompt is a 400, not a RecursionError or a tokenizer crash.
        try:
            return decode_json(bytes(body))
        except JsonRejected as exc:
            raise APIError(400, f"the request body is not valid JSON ({exc.reason}): {exc.detail}", code="invalid_json") from None

    def check_model(self, model: str) -> None:
        if model != self.model_name:
            raise APIError(404, f"The model {model!r} does not exist; this server serves {self.model_name!r}",
                           param="model", code="model_not_found")

    def sampling_config(
        self, req, max_tokens: int | None, prompt_lens: list[int], prompt_param: str = "messages"
    ) -> SamplingConfig:
        """The request's `SamplingConfig`, after the limits: max_tokens, n, and the context length."""
        if max_tokens is not None and max_tokens > self.cfg.max_tokens:
            raise APIError(400, f"max_tokens is {max_tokens}, above this server's limit of {self.cfg.max_tokens}",
                           param="max_tokens", code="invalid_value")
        n = req.n or 1
        if n > self.cfg.max_n:
            raise APIError(400, f"n is {n}, above this server's limit of {self.cfg.max_n}", param="n", code="invalid_value")
        longest = max(prompt_lens)
        if self.limit is not None:
            if longest >= self.limit:
                raise APIError(400, f"the prompt has {longest} tokens; this model's context is {self.limit} tokens",
                               param=prompt_param, code="context_length_exceeded")
            if max_tokens is not None and longest + max_tokens > self.limit:
                raise APIError(
                    400, f"this model's context is {self.limit} tokens; the prompt has {longest} and max_tokens "
                    f"asks for {max_tokens}: reduce the prompt or max_tokens",
                    param="max_tokens", code="context_length_exceeded",
                )
        if max_tokens is None:
            max_tokens = min(self.cfg.default_max_tokens, self.cfg.max_tokens)
            if self.limit is not None:
                max_tokens = min(max_tokens, self.limit - longest)
        try:
            return self._sampling(req, max_tokens, n)
        except ValidationError as exc:  # a combination the request model let through: still the client's
            err = exc.errors()[0]
            raise APIError(400, f"Invalid value for {'.'.join(map(str, err['loc']))!r}: {err['msg']}",
                           param=".".join(map(str, err["loc"])) or None, code="invalid_value") from None

    def _sampling(self, req, max_tokens: int, n: int) -> SamplingConfig:
        if isinstance(req, ChatCompletionRequest):
            top_logprobs = (req.top_logprobs or 0) if req.logprobs else 0
        else:
            top_logprobs = req.logprobs or 0
        return SamplingConfig(
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            top_k=req.top_k or 0,
            min_p=req.min_p or 0.0,
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
            top_logprobs=top_logprobs,
            response_format=req.response_format.type if req.response_format else "text",
            json_schema=req.response_format.json_schema.schema_ if req.response_format and req.response_format.json_schema else None,
            logit_bias=self.token_bias(req),
            max_new_tokens=max(max_tokens, 1),  # max_tokens 0 (echo only) decodes nothing: Job.generate
            n=n,
            stop=req.stop or [],
            seed=req.seed,
            max_batch_size=self.cfg.max_batch_rows,
        )

    def token_bias(self, req) -> dict[int, float]:
        bias = req.token_bias()
        vocab = min(len(self.tokenizer), self.engine.model.config.vocab_size)
        outside = next((i for i in bias if i >= vocab), None)
        if outside is not None:
            raise APIError(400, f"logit_bias: token id {outside} is outside the vocabulary [0, {vocab})",
                           param="logit_bias", code="invalid_value")
        return bias

    # -- prompts ----------------------------------------------------------------------------------

    def chat_prompt_ids(self, req: ChatCompletionRequest) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise APIError(400, "this model's tokenizer has no chat template; use /v1/completions", param="messages")
        messages = [m.as_template_message() for m in req.messages]
        try:
            ids = tools.render_chat(self.tokenizer, messages, tools.tool_dicts(req))
        except Exception as exc:  # jinja raises for conversations the template refuses
            raise APIError(400, f"the chat template cannot render these messages: {exc}", param="messages") from None
        return list(ids)

    def completion_prompt_ids(self, req: CompletionRequest) -> list[list[int]]:
        prompt = req.prompt
        if isinstance(prompt, str):
            prompts: list = [prompt]
        elif prompt and all(isinstance(t, int) for t in prompt):
            prompts = [prompt]
        else:
            prompts = list(prompt)
        if not prompts:
            raise APIError(400, "prompt is empty", param="prompt")
        if len(prompts) > self.cfg.max_prompts:
            raise APIError(400, f"{len(prompts)} prompts; this server takes at most {self.cfg.max_prompts} per request",
                           param="prompt", code="invalid_value")
        vocab = len(self.tokenizer)
        out = []
        for p in prompts:
            ids = self.tokenizer(p)["input_ids"] if isinstance(p, str) else list(p)
            if not ids:
                raise APIError(400, "a prompt has no tokens", param="prompt")
            if any(t < 0 or t >= vocab for t in ids):
                raise APIError(400, f"token ids must be in [0, {vocab})", param="prompt", code="invalid_value")
            out.append(ids)
        return out

    # -- endpoints --------------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        self.check_auth(request)
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def model(self, request: Request) -> Response:
        self.check_auth(request)
        self.check_model(request.path_params["model"])
        return JSONResponse(self._model_card())

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "chatforge",
                "max_model_len": self.limit}

    async def tokenize(self, request: Request) -> Response:
        self.check_auth(request)
        return JSONResponse(tokenize(self.tokenizer, await self.read_json(request), self.limit, self.check_model))

    async def detokenize(self, request: Request) -> Response:
        self.check_auth(request)
        return JSONResponse(detokenize(self.tokenizer, await self.read_json(request), self.check_model))

    async def tokenizer_info(self, request: Request) -> Response:
        self.check_auth(request)
        return JSONResponse(tokenizer_info(self.tokenizer, self.limit))

    async def metrics_text(self, request: Request) -> Response:
        engine = self.engine
        text = self.metrics.render(engine.queue_size(), engine.rounds, engine.batched_calls)
        return PlainTextResponse(text, media_type=CONTENT_TYPE)

    async def chat_completions(self, request: Request) -> Response:
        self.check_auth(request)
        # in a thread: a response_format / tools schema compiles here (a pattern's automaton can take seconds)
        req = await asyncio.to_thread(parse_request, ChatCompletionRequest, await self.read_json(request))
        self.check_model(req.model)
        ids = self.chat_prompt_ids(req)
        calling = tools.mode(req)
        if calling == "forced":  # the answer starts inside the call (serve/tools.py)
            ids = ids + self.tokenizer(tools.MARKER, add_special_tokens=False)["input_ids"]
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        cfg = self.sampling_config(req, max_tokens, [len(ids)])
        if calling == "none":
            return await self._generate(request, "chat", req, [ids], cfg, bool(req.logprobs))
        return await self._generate_tool_answer(request, req, ids, cfg, calling)

    async def _generate_tool_answer(self, request: Request, req: ChatCompletionRequest, prompt: list[int],
                                    cfg: SamplingConfig, calling: str) -> Response:
        """A chat answer that may call tools: decoded whole (serve/tools.py), then sent as JSON or SSE."""

        def logprobs(completion) -> dict | None:
            return chat_logprobs(self.token_text, completion) if req.logprobs else None

        async def decode(ids: list[int], settings: SamplingConfig) -> list:
            job = Job.create([ids], settings, stream=False)
            self.engine.submit(job)
            return (await self._result(request, job)).completions[0]

        if calling == "forced":
            choices, generated = await tools.forced_choices(req, prompt, cfg, decode, logprobs)
        else:
            choices, generated = [], 0
            for completion in await decode(prompt, cfg):
                generated += len(completion.token_ids)
                content, calls = tools.parse_calls(completion.text, req)
                choices.append((content, "tool_calls" if calls else completion.finish_reason, logprobs(completion), calls or None))
        self.metrics.tokens(len(prompt), generated)
        used = usage(len(prompt), generated)
        rid = new_id("chatcmpl")
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            body = tools.sse_replay(rid, self.model_name, choices, used if include_usage else None)
            return StreamingResponse(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return JSONResponse(chat_response(rid, self.model_name, choices, used))

    async def completions(self, request: Request) -> Response:
        self.check_auth(request)
        # in a thread: a response_format / tools schema compiles here (a pattern's automaton can take seconds)
        req = await asyncio.to_thread(parse_request, CompletionRequest, await self.read_json(request))
        self.check_model(req.model)
        prompts = self.completion_prompt_ids(req)
        cfg = self.sampling_config(req, req.max_tokens, [len(p) for p in prompts], "prompt")
        return await self._generate(request, "text", req, prompts, cfg, req.logprobs is not None)

    async def _generate(
        self, request: Request, kind: str, req, prompts: list[list[int]], cfg: SamplingConfig, want_logprobs: bool
    ) -> Response:
        echo = kind == "text" and bool(req.echo)
        echo_top = req.logprobs if echo and want_logprobs else None  # the prompt's log-probs are shown only then
        job = Job.create(prompts, cfg, stream=bool(req.stream), echo_top=echo_top, generate=req.max_tokens != 0)
        self.engine.submit(job)
        rid = new_id("chatcmpl" if kind == "chat" else "cmpl")
        prompt_tokens = sum(len(p) for p in prompts)
        if job.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            body = self._sse(kind, job, rid, prompt_tokens, include_usage, want_logprobs)
            return StreamingResponse(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        results = await self._result(request, job)
        generated = sum(len(c.token_ids) for per_prompt in results.completions for c in per_prompt)
        self.metrics.tokens(prompt_tokens, generated)
        used = usage(prompt_tokens, generated)
        if kind == "chat":
            choices = [(c.text, c.finish_reason, chat_logprobs(self.token_text, c) if want_logprobs else None)
                       for per_prompt in results.completions for c in per_prompt]
            return JSONResponse(chat_response(rid, self.model_name, choices, used))
        return JSONResponse(completion_response(rid, self.model_name, self._text_choices(results, prompts, echo, want_logprobs), used))

    async def _result(self, request: Request, job: Job) -> JobResult:
        """A non-streamed job's result; a generation failure is a 500, a client that left cancels it."""
        try:
            return await _result_unless_client_leaves(request, job)
        except asyncio.CancelledError:
            job.cancelled.set()
            raise
        except APIError:
            raise
        except Exception as exc:
            raise generation_error(exc) from None

    def _text_choices(self, results: JobResult, prompts: list[list[int]], echo: bool, want_logprobs: bool) -> list[tuple]:
        """(text, finish_reason, logprobs) per choice; an echoed prompt's text is its tokens decoded."""
        choices = []
        for p, per_prompt in enumerate(results.completions):
            prompt_text = self.tokenizer.decode(prompts[p], skip_special_tokens=True) if echo else ""
            for c in per_prompt:
                logprobs = None
                if want_logprobs:
                    scores = results.prompt_logprobs[p] if echo else None
                    logprobs = completion_logprobs(self.token_text, c, scores, prompts[p], prompt_text)
                choices.append((prompt_text + c.text, c.finish_reason, logprobs))
        return choices

    async def _sse(
        self, kind: str, job: Job, rid: str, prompt_tokens: int, include_usage: bool, want_logprobs: bool = False
    ) -> AsyncIterator[str]:
        created = now()
        streamed_ids: dict[int, list[int]] = {}  # per choice, the tokens already sent (completions' text_offset)

        def logprobs_of(index: int, tokens: list) -> dict | None:
            if not want_logprobs or not tokens:
                return None
            if kind == "chat":
                return {"content": chat_entries(self.token_text, tokens), "refusal": None}
            earlier = streamed_ids.setdefault(index, [])
            out = completion_chunk_logprobs(self.token_text, tokens, earlier)
            earlier += [t[0] for t in tokens]
            return out

        def chunk(index: int, text: str | None, finish: str | None, role: bool = False, logprobs: dict | None = None) -> str:
            if kind == "chat":
                delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
                data = chat_chunk(rid, created, self.model_name, index, delta, finish, logprobs)
            else:
                data = completion_chunk(rid, created, self.model_name, index, text or "", finish, logprobs)
            return f"data: {json.dumps(data)}\n\n"

        try:
            if kind == "chat":
                for index in range(len(job.prompts) * job.cfg.n):
                    yield chunk(index, None, None, role=True)
            while True:
                event = await job.events.get()
                if event[0] == "delta":
                    _, index, text, finish, tokens = event
                    logprobs = logprobs_of(index, tokens)
                    if text or logprobs is not None:
                        yield chunk(index, text, None, logprobs=logprobs)
                    if finish is not None:
                        yield chunk(index, None, finish)
                elif event[0] == "done":
                    completion_tokens = sum(len(c.token_ids) for per_prompt in event[1] for c in per_prompt)
                    self.metrics.tokens(prompt_tokens, completion_tokens)
                    if include_usage:
                        data = {"id": rid, "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
                                "created": created, "model": self.model_name, "choices": [],
                                "usage": usage(prompt_tokens, completion_tokens)}
                        yield f"data: {json.dumps(data)}\n\n"
                    break
                else:  # the headers are sent: report the failure inside the stream, as OpenAI does
                    yield f"data: {json.dumps(generation_error(event[1]).body())}\n\n"
                    break
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled.set()  # the client went away (or we are done): stop decoding


# Route templates, the label values of /metrics (any other path is "other").
ROUTES = ["/", "/health", "/version", "/metrics", "/tokenize", "/detokenize", "/tokenizer_info", "/v1/models",
          "/v1/chat/completions", "/v1/completions", "/v1/models/{model}"]


def versions() -> dict[str, str]:
    """`GET /version`: chatforge's version (vLLM's key), and the libraries that compute the answers."""
    import torch
    import transformers

    from chatforge import __version__

    return {"version": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


CLIENT_GONE = 499  # nginx's "client closed request": nobody reads it, the access log shows it


async def _result_unless_client_leaves(request: Request, job: Job):
    """The job's result; if the client disconnects first, the job is cancelled (the worker skips it,
    or stops decoding it) and the handler ends with `CLIENT_GONE`."""
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({job.future, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not job.future.done():
        job.cancelled.set()
        job.future.cancel()
        raise APIError(CLIENT_GONE, "the client closed the connection before the answer", code="client_closed_request")
    return job.future.result()


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is already read, so `receive` waits for that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def generation_error(exc: BaseException) -> APIError:
    if isinstance(exc, APIError):
        return exc
    return APIError(500, f"generation failed: {type(exc).__name__}: {exc}", code="generation_failed")


async def _api_error(request: Request, exc: APIError) -> Response:
    if exc.status >= 500:
        logger.error("%s %s -> %d: %s", request.method, request.url.path, exc.status, exc.message)
    headers = None
    if exc.status in (429, 503):  # overload: tell the client when to come back
        headers = {"Retry-After": str(request.app.state.server.cfg.retry_after_s)}
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse(APIError(exc.status_code, message, code=code).body(), status_code=exc.status_code)


async def _server_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    body = APIError(500, f"internal server error: {type(exc).__name__}", code="internal_error").body()
    return JSONResponse(body, status_code=500)


def build_app(engine: ModelWorker, cfg: ServeConfig, model_name: str) -> Starlette:
    """The ASGI app; the engine's worker thread starts and stops with the app's lifespan."""
    server = Server(engine, cfg, model_name)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": model_name})

    async def version(request: Request) -> Response:
        return JSONResponse(versions())

    routes = [
        Route("/", chat_page, methods=["GET"]),  # the browser chat page (serve/chat_page.py)
        Route("/health", health, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
        Route("/metrics", server.metrics_text, methods=["GET"]),
        Route("/tokenize", server.tokenize, methods=["POST"]),
        Route("/detokenize", server.detokenize, methods=["POST"]),
        Route("/tokenizer_info", server.tokenizer_info, methods=["GET"]),
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/v1/models/{model:path}", server.model, methods=["GET"]),
        Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
        Route("/v1/completions", server.completions, methods=["POST"]),
    ]

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        try:
            yield
        finally:
            await asyncio.to_thread(engine.stop)

    app = Starlette(
        routes=routes,
        middleware=[Middleware(MetricsMiddleware, metrics=server.metrics)],
        exception_handlers={APIError: _api_error, HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.server = server
    return app
