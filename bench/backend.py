"""The small backend every scenario calls: directly, through the baseline proxies and the gateway.

Run as its own process (`python -m bench.backend`). It binds its own socket on port 0 and
prints the port as stdout line 1, so the harness learns it without probe-then-bind.
With `--unix PATH` it listens on that unix socket instead: how a node's supervisord runs it
as the program svc-bench (the failover scenario kills it there), since a program's address
must be in the node's config before the program starts.
"""

from __future__ import annotations

import argparse
import os
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


def bind_unix(path: str) -> socket.socket:
    # A socket file left by a predecessor that was killed (kill -9 leaves it) would refuse the bind.
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(2048)
    return sock


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.backend")
    parser.add_argument("--unix", metavar="PATH", help="listen on this unix socket, not on TCP port 0")
    args = parser.parse_args(argv)
    sock = bind_unix(args.unix) if args.unix else bind_loopback()
    print(args.unix or sock.getsockname()[1], flush=True)
    config = uvicorn.Config(create_app(), loop="none", http="httptools", lifespan="off",
                            access_log=False, log_level="warning")
    # serve() runs on whatever loop it is given: uvloop, as `uvicorn --loop uvloop` would pick.
    uvloop.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
