"""A minimal blocking HTTP/1.1 keep-alive client, for latency on one connection.

Why not aiohttp or http.client: at the sub-millisecond scale we compare, a client's own
per-request cost is noise in every figure. A plain socket with a buffered reader costs a
few microseconds per request, the same for every target, so `added = ours - direct` is
the proxy's cost and little else.
"""

from __future__ import annotations

import socket
import time
from typing import Self
from urllib.parse import urlsplit

CHUNK = 64 * 1024


class HttpError(RuntimeError):
    pass


class KeepAliveClient:
    def __init__(self, base_url: str, timeout_s: float = 30, headers: tuple[str, ...] = ()):
        parts = urlsplit(base_url)
        self.host_header = parts.netloc
        self.headers = headers  # "Name: value" lines sent with every request
        self.address, self.timeout_s = (parts.hostname, parts.port), timeout_s
        self.last_headers: dict[bytes, bytes] = {}  # of the last response (X-Mesh-Worker: who served it)
        self._connect()

    def _connect(self) -> None:
        self.sock = socket.create_connection(self.address, timeout=self.timeout_s)
        # Nagle would hold a small request back waiting for an ACK: 40 ms stalls, not latency.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb", buffering=CHUNK)

    def request(self, method: str, path: str, body: bytes = b"",
                content_type: str = "application/json") -> tuple[int, bytes]:
        head = self._head(method, path, len(body), content_type)
        self.sock.sendall(head + body if len(body) < CHUNK else head)
        if len(body) >= CHUNK:
            self.sock.sendall(body)
        return self._read_response()

    def upload(self, path: str, size: int, chunk: bytes) -> tuple[int, bytes]:
        """POST `size` bytes made of repeats of `chunk`, written as they go (never built whole)."""
        self.sock.sendall(self._head("POST", path, size, "application/octet-stream"))
        left = size
        while left > 0:
            piece = chunk if left >= len(chunk) else chunk[:left]
            self.sock.sendall(piece)
            left -= len(piece)
        return self._read_response()

    def _head(self, method: str, path: str, length: int, content_type: str) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host_header}", "Accept: */*", *self.headers]
        if method in ("POST", "PUT", "PATCH") or length:
            lines += [f"Content-Type: {content_type}", f"Content-Length: {length}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _read_response(self) -> tuple[int, bytes]:
        status_line = self.reader.readline()
        if not status_line:
            raise HttpError("connection closed before a response")
        status = int(status_line.split(b" ", 2)[1])
        headers = self.last_headers = self._read_headers()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = self._read_chunked()
        else:
            length = int(headers.get(b"content-length", b"0"))
            body = self.reader.read(length)
            if len(body) < length:
                # A proxy whose upstream died mid-body can only close: a 200 with half a body
                # failed, and counted so here it fails at its own time, not as the next request.
                raise HttpError(f"connection closed {len(body)} bytes into a {length}-byte body")
        if headers.get(b"connection", b"").lower() == b"close":
            # The server ends the connection after this reply (RFC 9112 §9.6): open the next one now.
            self.close()
            self._connect()
        return status, body

    def _read_headers(self) -> dict[bytes, bytes]:
        headers = {}
        while (line := self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return headers

    def _read_chunked(self) -> bytes:
        parts = []
        while (size := int(self.reader.readline().split(b";")[0], 16)) > 0:
            parts.append(self.reader.read(size))
            self.reader.readline()  # the CRLF after each chunk
        self._read_headers()  # trailers, if any
        return b"".join(parts)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sequential_latencies_ms(base_url: str, path: str, count: int, warmup: int,
                            budget_s: float, headers: tuple[str, ...] = ()) -> list[float]:
    """Up to `count` GETs one after another on one keep-alive connection, after `warmup`
    unmeasured ones; stops early after `budget_s`, so a slow route cannot stall the bench."""
    with KeepAliveClient(base_url, headers=headers) as client:
        for _ in range(warmup):
            _expect_ok(client.request("GET", path), path)
        latencies: list[float] = []
        give_up_at = time.perf_counter_ns() + int(budget_s * 1e9)
        while len(latencies) < count and (not latencies or time.perf_counter_ns() < give_up_at):
            start = time.perf_counter_ns()
            reply = client.request("GET", path)
            latencies.append((time.perf_counter_ns() - start) / 1e6)
            _expect_ok(reply, path)
    return latencies


def _expect_ok(reply: tuple[int, bytes], path: str) -> None:
    if reply[0] != 200:
        raise HttpError(f"GET {path}: status {reply[0]}: {reply[1][:200]!r}")
