"""Entry point of the `vision-ocr` backend program: serve the OCR app on a unix socket.

The CLI calls `serve()`; uvicorn owns the loop and handles SIGTERM/SIGINT itself
(stops accepting, lets requests in flight finish, runs lifespan shutdown).
"""

from __future__ import annotations

import os

from services.backends.http import serve_app
from services.backends.ocr.app import create_app


def serve(socket_path: str, log_level: str = "info") -> None:
    """Run the vision-ocr HTTP server on `socket_path` until SIGTERM/SIGINT.

    After a graceful stop uvicorn re-raises the signal, so the process ends killed by
    SIGTERM (status -15 / 143) rather than with exit status 0.
    """
    # Tesseract's OpenMP threads fight each other when several OCRs run at once and are
    # slower even alone on small images; one thread per run unless the operator says so.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    serve_app(create_app(), socket_path, log_level)
