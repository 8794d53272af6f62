"""A tiny random chat model served on a free port, shared by the server's test modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chatforge.serve import ServeConfig
from chatforge.serve.server import BackgroundServer, build
from tiny_models import make_tiny_model


@contextmanager
def serve_tiny(model_dir: Path, tokenizer, max_tokens: int, **model_kwargs) -> Iterator[tuple[str, object]]:
    """Save a seeded random model (vocabulary 384, untied) with `tokenizer` and serve it: (url, Server)."""
    make_tiny_model(vocab_size=384, seed=3, tie_word_embeddings=False, **model_kwargs).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    app = build(ServeConfig(model_dir=str(model_dir), model_name="tiny", max_tokens=max_tokens, max_n=4,
                            log_level="warning"))
    with BackgroundServer(app) as url:
        yield url, app.state.server


def openai_client(url: str, timeout: float = 600):
    """An OpenAI client of the served model, without retries. 600 s: on a loaded 2-core machine one
    constrained request took minutes."""
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=timeout)
