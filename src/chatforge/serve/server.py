"""Load a model directory and run the app on uvicorn, in the foreground (CLI) or a thread (tests)."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from chatforge.atomic_dir import check_complete
from chatforge.errors import ChatforgeError
from chatforge.serve.config import ServeConfig

API_KEY_ENV = "CHATFORGE_API_KEY"


def load_model(model_dir: str | Path, device: str = "auto", dtype: str = "auto"):
    """(model, tokenizer) from a local Hugging Face directory: safetensors weights only, no remote code."""
    import torch
    from transformers import AutoModelForCausalLM

    from chatforge.tokenizer.load import load_tokenizer

    path = Path(model_dir)
    if not path.is_dir():
        raise ChatforgeError(f"model directory not found: {path}")
    check_complete(path)  # not a final/ whose run was killed while writing it
    if not (path / "config.json").is_file():
        raise ChatforgeError(f"{path} is not a Hugging Face model directory (no config.json)")
    if not any(path.glob("*.safetensors")):
        raise ChatforgeError(f"{path} has no .safetensors weights (pickled .bin weights are not loaded)")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = load_tokenizer(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), trust_remote_code=False, use_safetensors=True,
            dtype="auto" if dtype == "auto" else getattr(torch, dtype),
        )
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ChatforgeError(f"cannot load the model in {path}: {first}") from None
    return model.to(device).eval(), tokenizer


def resolve(cfg: ServeConfig) -> ServeConfig:
    """`cfg` with the API key taken from the environment when the config has none."""
    if cfg.api_key is None and os.environ.get(API_KEY_ENV):
        cfg = cfg.model_copy(update={"api_key": os.environ[API_KEY_ENV]})
    return cfg


def model_name(cfg: ServeConfig) -> str:
    return cfg.model_name or Path(cfg.model_dir).resolve().name


def build(cfg: ServeConfig, model=None, tokenizer=None):
    """The ASGI app for `cfg`; a given (model, tokenizer) is served instead of loading `cfg.model_dir`."""
    from chatforge.serve.app import build_app
    from chatforge.serve.engine import ModelWorker

    cfg = resolve(cfg)
    if model is None:
        model, tokenizer = load_model(cfg.model_dir, cfg.device, cfg.dtype)
    engine = ModelWorker(model, tokenizer, max_batch=cfg.max_batch, max_queue=cfg.max_queue)
    return build_app(engine, cfg, model_name(cfg))


def _uvicorn_config(app, cfg: ServeConfig, **kwargs):
    """uvicorn's settings for `app`, with the connection limits of `cfg` (serve/connections.py)."""
    import uvicorn

    from chatforge.serve.connections import guarded_protocol

    protocol = guarded_protocol(cfg.max_connections, cfg.read_timeout_s, cfg.retry_after_s)
    settings = {"host": cfg.host, "port": cfg.port, "log_level": cfg.log_level, "lifespan": "on",
                "timeout_graceful_shutdown": 5, "http": protocol, **kwargs}
    return uvicorn.Config(app, **settings)


def serve(cfg: ServeConfig) -> None:
    """Load the model and serve until interrupted (Ctrl-C)."""
    import uvicorn

    app = build(cfg)
    uvicorn.Server(_uvicorn_config(app, cfg)).run()


class BackgroundServer:
    """uvicorn in a daemon thread on a loopback port, for tests and tools: `with BackgroundServer(app) as url:`."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        server = getattr(app.state, "server", None)  # an app from `build`: serve it with its limits
        if server is not None:
            config = _uvicorn_config(app, server.cfg, log_level=log_level, timeout_graceful_shutdown=2)
        else:
            config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()
