"""The small backend every scenario calls: directly, through nginx and through the gateway.

Run as its own process (`python -m bench.backend`). It binds its own socket on port 0 and
prints the port as stdout line 1, so the harness learns it without probe-then-bind.
"""

from __future__ import annotations

import socket
import sys

import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

HELLO = {"message": "hello", "service": "bench"}


async def health(_: Request) -> Response:
    return JSONResponse({"status": "healthy"})


async def hello(_: Request) -> Response:
    return JSONResponse(HELLO)


async def echo(request: Request) -> Response:
    return JSONResponse(await request.json())


async def upload(request: Request) -> Response:
    # Count the body chunk by chunk: the backend itself must not be the one that buffers.
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return JSONResponse({"received_bytes": size})


def create_app() -> Starlette:
    return Starlette(routes=[
        Route("/health", health), Route("/hello", hello),
        Route("/", echo, methods=["POST"]), Route("/upload", upload, methods=["POST"]),
    ])


def bind_loopback() -> socket.socket:
    # Name IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and a
    # proto-0 listener's connections would stall ~40 ms per keep-alive reply (Nagle + delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)  # connections queue until uvicorn accepts them
    return sock


def main() -> None:
    sock = bind_loopback()
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(create_app(), loop="none", http="httptools", lifespan="off",
                            access_log=False, log_level="warning")
    # serve() runs on whatever loop it is given: uvloop, as `uvicorn --loop uvloop` would pick.
    uvloop.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    sys.exit(main())
