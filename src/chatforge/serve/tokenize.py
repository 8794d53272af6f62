"""`POST /tokenize`, `POST /detokenize`, `GET /tokenizer_info`: the served tokenizer, in vLLM's shapes.

lm-evaluation-harness (`local-completions` with `tokenizer_backend=remote`, or its auto-detection)
and other clients use these to count and build prompts with the server's own tokenizer:

    /tokenize   {"prompt": str, "add_special_tokens": true}            -> {"count", "max_model_len", "tokens"}
                {"messages": [...], "add_generation_prompt": true}    (the chat template, as /v1/chat/completions;
                                                                   with "tools": [...], the tool list too)
                "return_token_strs": true adds "token_strs" (the vocabulary pieces)
    /detokenize {"tokens": [ids]}                                     -> {"prompt": text} (special tokens kept)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

from chatforge.serve.protocol import APIError, ChatMessage, Flag, TokenId, Tool, _Request, parse_request
from chatforge.serve.tools import render_chat


class TokenizeRequest(_Request):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    tools: list[Tool] | None = None
    add_special_tokens: Flag = True
    add_generation_prompt: Flag = True
    return_token_strs: Flag = False

    def unsupported(self) -> tuple[str, str] | None:
        if (self.prompt is None) == (self.messages is None):
            return "prompt", "give exactly one of prompt (a string) and messages (a chat)"
        if self.tools and self.messages is None:
            return "tools", "tools are rendered with messages (a chat), not with a prompt"
        return None


class DetokenizeRequest(_Request):
    model: str | None = None
    tokens: list[TokenId]

    def unsupported(self) -> tuple[str, str] | None:
        return None


def tokenize(tokenizer, data: Any, max_model_len: int | None, check_model: Callable[[str], None]) -> dict[str, Any]:
    req = parse_request(TokenizeRequest, data)
    if req.model is not None:
        check_model(req.model)
    if req.messages is not None:
        if not getattr(tokenizer, "chat_template", None):
            raise APIError(400, "this model's tokenizer has no chat template; tokenize a prompt instead", param="messages")
        messages = [m.as_template_message() for m in req.messages]
        try:
            functions = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
            ids = render_chat(tokenizer, messages, functions, req.add_generation_prompt)
        except Exception as exc:  # jinja raises for conversations the template refuses
            raise APIError(400, f"the chat template cannot render these messages: {exc}", param="messages") from None
    else:
        ids = list(tokenizer(req.prompt, add_special_tokens=req.add_special_tokens)["input_ids"])
    out: dict[str, Any] = {"count": len(ids), "max_model_len": max_model_len, "tokens": ids}
    if req.return_token_strs:
        out["token_strs"] = tokenizer.convert_ids_to_tokens(ids)
    return out


def detokenize(tokenizer, data: Any, check_model: Callable[[str], None]) -> dict[str, str]:
    req = parse_request(DetokenizeRequest, data)
    if req.model is not None:
        check_model(req.model)
    vocab = len(tokenizer)
    if any(t < 0 or t >= vocab for t in req.tokens):
        raise APIError(400, f"token ids must be in [0, {vocab})", param="tokens", code="invalid_value")
    return {"prompt": tokenizer.decode(req.tokens)}


def tokenizer_info(tokenizer, max_model_len: int | None) -> dict[str, Any]:
    """The special tokens and template a client needs to build prompts as the server does."""
    return {
        "tokenizer_class": type(tokenizer).__name__,
        "bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token, "pad_token": tokenizer.pad_token,
        "unk_token": getattr(tokenizer, "unk_token", None),
        "chat_template": getattr(tokenizer, "chat_template", None),
        "model_max_length": max_model_len, "vocab_size": len(tokenizer),
    }
