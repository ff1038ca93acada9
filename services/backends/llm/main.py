"""Entry point of the `llm-inference` backend program: serve the LLM app on a unix socket.

The CLI calls `serve()`; the socket answers at once (503 `model_loading`), and /health
turns 200 once the model has loaded (~15 s on 2 cores: torch import and GGUF unpacking).
"""

from __future__ import annotations

from services.backends.http import serve_app
from services.backends.llm.api import DEFAULT_MAX_TOKENS_LIMIT
from services.backends.llm.app import create_app


def serve(socket_path: str, log_level: str = "info", max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT,
          context_tokens: int | None = None) -> None:
    """Run the llm-inference HTTP server on `socket_path` until SIGTERM/SIGINT.

    The limits come from the caller's config; this module reads no environment.
    """
    serve_app(create_app(max_tokens_limit=max_tokens_limit, context_tokens=context_tokens),
              socket_path, log_level)
