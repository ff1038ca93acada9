"""A real gRPC server on loopback running one servicer, and a channel to it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import grpc


@contextlib.asynccontextmanager
async def serving(add_to_server: Callable, servicer: object) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    add_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop(None)
