"""The api process: the Starlette app on uvicorn, on a unix socket that only Envoy (the same
user) connects to.

The socket is bound here, not by uvicorn: uvicorn would make it mode 0666, open to every
local user; ours is 0600 from the start. A socket left by a killed predecessor is removed.
"""

from __future__ import annotations

import logging

import uvicorn

from services.api.app import create_app
from services.common import unix_socket
from services.common.config import Config

log = logging.getLogger(__name__)


def server(cfg: Config, started_at: float) -> uvicorn.Server:
    # proxy_headers off: Envoy is the edge, and a client's X-Forwarded-For says nothing
    # uvicorn should take as the client. The loop is the caller's (uvloop, see cli.py).
    return uvicorn.Server(uvicorn.Config(
        create_app(cfg, started_at), loop="none", http="httptools", ws="none", lifespan="on", access_log=False,
        log_config=None, proxy_headers=False, timeout_graceful_shutdown=10))


async def serve(cfg: Config, started_at: float) -> None:
    """Serve until SIGTERM or SIGINT, then finish the requests in flight (uvicorn's
    graceful shutdown, at most timeout_graceful_shutdown seconds) and stop."""
    sock = unix_socket.listening(cfg.api_socket)
    log.info("api on unix:%s: GET /health /stats /metrics /mesh/*, POST /service/{type}", cfg.api_socket)
    await server(cfg, started_at).serve(sockets=[sock])
