"""Entry point of the `vision-ocr` backend program: serve the OCR app on a unix socket.

The CLI calls `serve()`; uvicorn owns the loop and handles SIGTERM/SIGINT itself
(stops accepting, lets requests in flight finish, runs lifespan shutdown).
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from pathlib import Path

import uvicorn

from services.backends.ocr.app import create_app

log = logging.getLogger(__name__)


def serve(socket_path: str, log_level: str = "info") -> None:
    """Run the vision-ocr HTTP server on `socket_path` until SIGTERM/SIGINT.

    After a graceful stop uvicorn re-raises the signal, so the process ends killed by
    SIGTERM (status -15 / 143) rather than with exit status 0.
    """
    path = Path(socket_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_socket(path)
    # Tesseract's OpenMP threads fight each other when several OCRs run at once and are
    # slower even alone on small images; one thread per run unless the operator says so.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    config = uvicorn.Config(
        create_app(), uds=str(path), log_level=log_level.lower(), access_log=False, lifespan="on",
        log_config=None,  # keep the CLI's logging, which prefixes lines with the program name
    )
    uvicorn.Server(config).run()


def _remove_stale_socket(path: Path) -> None:
    """Unlink a socket left by a dead server; refuse to clobber a live one or a non-socket."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket; not removing it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:  # refused: nobody listens, the file is stale
            log.info("removing stale socket %s", path)
            path.unlink(missing_ok=True)
            return
    raise RuntimeError(f"another server is already listening on {path}")
