"""An OpenAI-compatible HTTP server for a chatforge (or any local Hugging Face) causal LM.

`chatforge serve MODEL_DIR`; see docs/serving.md. Pieces: `config.py` (limits), `protocol.py` (wire
format), `engine.py` (the model worker and its batching policy), `stream.py` (token-by-token decoding),
`app.py` (Starlette routes), `server.py` (loading and uvicorn), `loadtest.py` (a bounded loopback load test).
"""

from chatforge.serve.config import ServeConfig

__all__ = ["ServeConfig"]
