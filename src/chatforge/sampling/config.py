"""The sampling settings every generating stage shares (Best-of-N, ReST-EM, online RL, eval, serving)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from chatforge.config.base import StrictModel


class SamplingConfig(StrictModel):
    temperature: float = Field(1.0, ge=0.0, description="0 = greedy (argmax); otherwise logits are divided by it")
    top_k: int = Field(0, ge=0, description="keep the k most likely tokens before sampling; 0 = off")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling: keep the smallest set of mass >= top_p; 1 = off")
    min_p: float = Field(0.0, ge=0.0, le=1.0, description="drop tokens below min_p x the top token's probability (after temperature); 0 = off")
    presence_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="OpenAI's: subtract this from the logit of every token already generated"
    )
    frequency_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="OpenAI's: subtract this times the token's count among the generated tokens"
    )
    repetition_penalty: float = Field(
        1.0, gt=0.0, le=10.0, description="CTRL's: logits of tokens in the prompt or generated so far / it (positive) or x it (negative); 1 = off"
    )
    top_logprobs: int = Field(0, ge=0, le=20, description="record the log-probs of this many most likely tokens at every step (Completion.top_logprobs)")
    response_format: Literal["text", "json_object", "json_schema"] = Field(
        "text", description="json_object = constrained decoding: every sample is a prefix of a JSON object, a whole one when it stops; "
        "json_schema = the same, valid against `json_schema`"
    )
    json_schema: dict[str, Any] | None = Field(
        None, description="with response_format json_schema: the JSON Schema (the subset of sampling/json_schema.py)"
    )
    logit_bias: dict[int, float] = Field(
        default_factory=dict, description="OpenAI's: token id -> bias in [-100, 100] added to its logit before sampling"
    )
    max_new_tokens: int = Field(256, ge=1, description="generated tokens per sample at most (finish_reason=length)")
    n: int = Field(1, ge=1, description="samples per prompt")
    stop: list[str] = Field(default_factory=list, description="stop strings; the text is cut before the first one")
    stop_token_ids: list[int] | None = Field(
        None, description="token ids that end a sample (kept as its last token); null = eos + end-of-turn; [] = none"
    )
    seed: int | None = Field(None, description="seed of the sampling generator; null = torch's global RNG")
    backend: Literal["torch", "vllm"] = Field("torch", description="torch = chatforge's loop; vllm = vLLM (GPU)")
    max_batch_size: int = Field(64, ge=1, description="rows (prompts x n) decoded together at most")
    decode: Literal["auto", "fast", "transformers"] = Field(
        "auto",
        description="torch backend's decode step: fast = chatforge's packed-weight Llama-family step (CPU), "
        "transformers = the model's own forward, auto = fast where the model supports it",
    )

    @model_validator(mode="after")
    def _check(self) -> SamplingConfig:
        if any(s == "" for s in self.stop):
            raise ValueError("sampling.stop: an empty stop string would stop every sample at once")
        if any(i < 0 for i in self.stop_token_ids or []):
            raise ValueError("sampling.stop_token_ids: token ids are >= 0")
        if (self.response_format == "json_schema") != (self.json_schema is not None):
            raise ValueError("sampling.json_schema: give a schema exactly when response_format is json_schema")
        if self.json_schema is not None:
            from chatforge.sampling.json_schema import compile_schema

            compile_schema(self.json_schema)  # SchemaError (a ValueError) names the keyword outside the subset
        bad = next(((i, b) for i, b in self.logit_bias.items() if i < 0 or not -100.0 <= b <= 100.0), None)
        if bad is not None:
            raise ValueError(f"sampling.logit_bias: token {bad[0]} -> {bad[1]}: ids are >= 0, biases in [-100, 100]")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
