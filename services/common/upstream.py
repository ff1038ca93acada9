"""HTTP sessions to a backend, whether it listens on TCP or on a unix socket."""

from __future__ import annotations

import socket

import aiohttp

# A peer that vanishes (power loss, a cut link) sends no reset: without these a request
# on a pooled connection to it would wait for its whole read timeout (minutes for an
# LLM). Sent data unacknowledged for USER_TIMEOUT_MS ends the connection, and so do
# keep-alive probes unanswered while we wait for a slow answer; a live peer's kernel
# acknowledges both however long its backend computes.
USER_TIMEOUT_MS = 15_000
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 5, 2, 3


def dead_peer_aware_socket(addr_info: tuple) -> socket.socket:
    """aiohttp's socket factory: a TCP socket that notices a peer gone silent."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)
    return sock


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
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, socket_factory=dead_peer_aware_socket)
    return aiohttp.ClientSession(connector=connector, timeout=timeout,
                                 auto_decompress=False), upstream
