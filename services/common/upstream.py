"""HTTP to a backend by its configured URL ("http://host:port" or "unix:/path"), with aiohttp.

Only the control side uses it (the router's health checks, the api's envelope): proxied
requests never pass through Python.
"""

from __future__ import annotations

import aiohttp

UNIX_PREFIX = "unix:"
UNIX_BASE = "http://backend"  # the host part of a URL sent over a unix socket (it names no host)


def base_url(upstream: str) -> str:
    """Where a path of the backend is appended: its URL, or a placeholder host for a socket."""
    return UNIX_BASE if upstream.startswith(UNIX_PREFIX) else upstream.rstrip("/")


def session(upstream: str) -> aiohttp.ClientSession:
    """A keep-alive session to one backend; timeouts are given per request. Answers are
    passed on as they came (no decompression)."""
    connector = (aiohttp.UnixConnector(path=upstream.removeprefix(UNIX_PREFIX))
                 if upstream.startswith(UNIX_PREFIX) else aiohttp.TCPConnector())
    return aiohttp.ClientSession(connector=connector, auto_decompress=False)
