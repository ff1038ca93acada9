"""A scripted HTTP server on loopback: a handler per connection, talking raw bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Self

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Scripted:
    """A loopback server running `handler` per connection, counting connections."""

    def __init__(self, handler: Handler):
        self.handler, self.connections, self.server, self.url = handler, 0, None, ""

    async def __aenter__(self) -> Self:
        async def serve(reader, writer):
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
