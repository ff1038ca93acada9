"""HTTP sessions to this node's backends, one per upstream, for the envelope's POST.

Only the envelope comes through Python: every other request to a backend goes through
Envoy. A session keeps its connections alive between requests, as Envoy would.
"""

from __future__ import annotations

import aiohttp

UNIX_PREFIX = "unix:"
# The Host a unix-socket backend is sent; it names no real host.
UNIX_BASE = "http://backend"


def base_url(upstream: str) -> str:
    """Where a path of the backend is appended: its URL, or a placeholder host for a socket."""
    return UNIX_BASE if upstream.startswith(UNIX_PREFIX) else upstream


class Backends:
    def __init__(self) -> None:
        self.sessions: dict[str, aiohttp.ClientSession] = {}

    def session(self, upstream: str) -> aiohttp.ClientSession:
        session = self.sessions.get(upstream)
        if session is None:
            connector = (aiohttp.UnixConnector(path=upstream.removeprefix(UNIX_PREFIX))
                         if upstream.startswith(UNIX_PREFIX) else aiohttp.TCPConnector())
            session = self.sessions[upstream] = aiohttp.ClientSession(connector=connector)
        return session

    async def close(self) -> None:
        for session in self.sessions.values():
            await session.close()
