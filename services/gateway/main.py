"""The gateway process: the Starlette app on uvicorn, on a socket bound here.

Binding the socket ourselves lets gateway_port be 0 (tests, several nodes on one host):
the real address goes to gateway.json in the runtime directory once it is listening.
"""

from __future__ import annotations

import json
import logging
import os
import socket

import uvicorn

from services.common.config import Config
from services.gateway.app import create_app

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns TCP_NODELAY on only for sockets that say TCP, and
    # without it every keep-alive reply waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections queue until uvicorn accepts them
    return sock


def write_address(cfg: Config, sock: socket.socket) -> None:
    host, port = sock.getsockname()[:2]
    path = cfg.gateway_address_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"host": host, "port": port}))
    os.replace(tmp, path)


async def serve(cfg: Config, started_at: float) -> None:
    sock = bind(cfg.gateway_host, cfg.gateway_port)
    write_address(cfg, sock)
    log.info("API server on http://%s:%d: GET /health /stats /metrics, ANY /service/{type}[/{path}]",
             *sock.getsockname()[:2])
    # proxy_headers off: the gateway is the edge, and X-Forwarded-For from a client (or a
    # peer) says who asked before it, not who connected; uvicorn would take it as the client.
    config = uvicorn.Config(create_app(cfg, started_at), loop="none", http="httptools",
                            lifespan="on", access_log=False, log_config=None, proxy_headers=False,
                            timeout_graceful_shutdown=10)
    await uvicorn.Server(config).serve(sockets=[sock])
