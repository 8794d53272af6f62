"""`chatforge serve` settings: where the model is, how the server listens, and the limits it enforces."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from chatforge.config.base import StrictModel


class ServeConfig(StrictModel):
    """One served model and the limits every request is checked against before it reaches the model."""

    model_dir: str = Field(..., min_length=1, description="Hugging Face model directory (safetensors weights + tokenizer)")
    model_name: str | None = Field(None, description="model id clients send and /v1/models lists; null = directory name")
    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 = every interface)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port; 0 = any free port")
    api_key: str | None = Field(
        None, description="require `Authorization: Bearer KEY`; null = env CHATFORGE_API_KEY, unset = no auth"
    )
    device: str = Field("auto", description="torch device for the model; auto = cuda when available, else cpu")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype; auto = as saved"
    )
    max_tokens: int = Field(1024, ge=1, description="largest max_tokens a request may ask for (400 above)")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request gives none (cut to max_tokens and to the context left)")
    max_n: int = Field(8, ge=1, description="largest n (samples per prompt) a request may ask for")
    max_prompts: int = Field(16, ge=1, description="prompts one /v1/completions request may carry")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="request bodies larger than this get 413")
    max_batch: int = Field(16, ge=1, description="requests the worker takes from the queue for one round")
    max_batch_rows: int = Field(64, ge=1, description="rows (prompts x n) the sampler decodes together at most")
    max_queue: int = Field(512, ge=1, le=1_000_000, description="requests waiting for the model at most; more get 429 with Retry-After")
    max_connections: int = Field(
        256, ge=1, le=100_000, description="open connections at most; more are answered 503 with Retry-After and closed"
    )
    read_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="a request's headers and body must arrive within this; slower ones get 408 and are closed"
    )
    retry_after_s: int = Field(1, ge=1, le=3600, description="the Retry-After of a 429 (queue full) or 503 (too many connections)")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field("info", description="uvicorn log level")
