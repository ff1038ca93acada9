"""HTTP sessions to this node's backends, one per upstream, for the envelope's POST.

Only the envelope comes through Python: every other request to a backend goes through
Envoy. A session keeps its connections alive between requests, as Envoy would.
"""

from __future__ import annotations

import aiohttp

from services.common import upstream


class Backends:
    def __init__(self) -> None:
        self.sessions: dict[str, aiohttp.ClientSession] = {}

    def session(self, url: str) -> aiohttp.ClientSession:
        if url not in self.sessions:
            self.sessions[url] = upstream.session(url)
        return self.sessions[url]

    async def close(self) -> None:
        for session in self.sessions.values():
            await session.close()
