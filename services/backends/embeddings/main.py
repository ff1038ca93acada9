"""Entry point of the `rag-embeddings` backend program: serve the embeddings app on a
unix socket. The CLI calls `serve()`; the socket answers at once, and /health turns 200
once the model has loaded (a few seconds, mostly importing torch).
"""

from __future__ import annotations

from services.backends.embeddings.app import DEFAULT_MAX_TEXTS, create_app
from services.backends.http import serve_app


def serve(socket_path: str, log_level: str = "info", max_texts: int = DEFAULT_MAX_TEXTS) -> None:
    """Run the rag-embeddings HTTP server on `socket_path` until SIGTERM/SIGINT.

    `max_texts` caps the texts of one request (the configurable limit of issue 5); the
    caller reads it from the config, this module reads no environment.
    """
    serve_app(create_app(max_texts=max_texts), socket_path, log_level)
