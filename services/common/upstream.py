"""HTTP sessions to a backend, whether it listens on TCP or on a unix socket."""

from __future__ import annotations

import aiohttp


def open_session(upstream: str, timeout_s: float | None = None) -> tuple[aiohttp.ClientSession, str]:
    """A keep-alive session for one upstream and the base URL to prefix request paths with.

    "unix:/run/x.sock" becomes a UnixConnector session whose URLs name a placeholder host,
    since HTTP still needs one in the request line.
    """
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    if upstream.startswith("unix:"):
        connector = aiohttp.UnixConnector(path=upstream.removeprefix("unix:"), limit=0)
        return aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     auto_decompress=False), "http://localhost"
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60)
    return aiohttp.ClientSession(connector=connector, timeout=timeout,
                                 auto_decompress=False), upstream
