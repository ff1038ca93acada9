"""The HTTP/1.1 client that talks to backends and peer gateways: the gateway's data path
and the router's health checks. Keep-alive pools and streamed bodies.

aiohttp's client cost ~60 µs of the ~165 µs of CPU the gateway spent per proxied request
(py-spy): its generality (cookies, redirects, tracing, multidicts, timeout objects) is paid
on every call. This client does what a proxy needs and no more: one request at a time per
connection; a body as bytes or as an async iterator of chunks; the answer's head parsed by
httptools (the parser uvicorn uses) and its body handed over as it arrives, reading paused
while too much waits unread; one timer per connection for the read timeout.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from urllib.parse import urlsplit

import httptools

# Unread body bytes above which we stop reading from the upstream (a slow client must not
# make the gateway hold a whole LLM answer or file) and below which we read again.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
# uvicorn closes a keep-alive connection after 5 s idle: reusing one idle nearly that long
# races its close, which a request that cannot be replayed would not survive.
IDLE_REUSE_S = 4.0
NO_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})
# A peer that vanishes (power loss, a cut link) sends no reset: without these a request
# on a pooled connection to it would wait for its whole read timeout (minutes for an
# LLM). Sent data unacknowledged for USER_TIMEOUT_MS ends the connection, and so do
# keep-alive probes unanswered while we wait for a slow answer; a live peer's kernel
# acknowledges both however long its backend computes.
USER_TIMEOUT_MS = 15_000
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 5, 2, 3


class UpstreamError(Exception):
    """The upstream could not be reached, or failed before its answer was complete."""


class ConnectFailed(UpstreamError):
    """No connection was made, so nothing was sent; the message says why, as "the upstream ..."."""


class Disconnected(UpstreamError):
    """The connection broke before the answer was complete (the upstream died, or closed a
    pooled connection just as we sent on it)."""


class ReadTimeout(UpstreamError):
    """The upstream sent nothing for the read timeout."""


class Response:
    """An upstream's answer: status and head at once, the body as it arrives."""

    def __init__(self, connection: Connection, status: int, raw_headers: list[tuple[bytes, bytes]]):
        self.status = status
        self.raw_headers = raw_headers  # names lowercased, in the upstream's order
        self._connection = connection
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future | None = None
        self._released = False

    def header(self, name: bytes) -> bytes | None:
        """The last value of a header (lowercase name), or None."""
        found = None
        for key, value in self.raw_headers:
            if key == name:
                found = value
        return found

    def small(self, limit: int) -> bool:
        """Whether the answer says it is at most `limit` bytes long."""
        length = self.header(b"content-length")
        return length is not None and length.isdigit() and int(length) <= limit

    async def receive_all(self) -> None:
        """Wait until the whole answer has arrived, without taking it (raise if it breaks off
        first); only for answers that fit below the mark where reading pauses."""
        while not self._complete:
            if self._error is not None:
                raise self._error
            self._waiter = self._connection.loop.create_future()
            await self._waiter

    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool. A read that fails or is given
        up (our caller's client went away) closes it: a half-read answer cannot be reused, and
        left open it would hold the upstream until its read timeout."""
        try:
            parts = [chunk async for chunk in self.chunks()]
        except BaseException:
            self.close()
            raise
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives. Read to its end, the connection goes back to the pool."""
        while True:
            while not self._chunks:
                if self._error is not None:
                    raise self._error
                if self._complete:
                    self.release()
                    return
                self._waiter = self._connection.loop.create_future()
                await self._waiter
            chunk = self._chunks.popleft()
            self._buffered -= len(chunk)
            if self._buffered <= LOW_WATER:
                self._connection.resume()
            yield chunk

    def release(self) -> None:
        """Done with the answer: its connection is reused if it was read to the end, else closed."""
        self._finish(reusable=self._complete)

    def close(self) -> None:
        """Abandon the answer: the upstream sees its connection close (an LLM stops generating)."""
        self._finish(reusable=False)

    def _finish(self, reusable: bool) -> None:
        if not self._released:
            self._released = True
            self._connection.finish(reusable)

    # --- fed by the connection ---

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > HIGH_WATER:
            self._connection.pause()
        self._wake()

    def _end(self, error: UpstreamError | None = None) -> None:
        self._complete = error is None
        self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Connection(asyncio.Protocol):
    """One keep-alive connection to an upstream, serving one request at a time."""

    def __init__(self, pool: Pool):
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._head: asyncio.Future | None = None
        self._response: Response | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_only = False  # a HEAD request: its answer has no body, whatever it says
        self._until_close = False  # neither length nor chunks: the body ends with the connection
        self._keep_alive = False  # as the answer's head says (the parser forgets once it is complete)
        self._paused = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._timeout = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0

    # --- a request ---

    async def send(self, head: bytes, body: bytes | AsyncIterable[bytes], chunked: bool,
                   head_only: bool, timeout: float) -> Response:
        self._head, self._response, self._head_only = self.loop.create_future(), None, head_only
        self._timeout = timeout
        if self.closed or self.transport.is_closing():
            raise Disconnected("the upstream closed the connection")
        if isinstance(body, bytes):
            self.transport.write(head + body)
        else:
            self.transport.write(head)
            await self._write_stream(body, chunked)
        self._last_read = self.loop.time()
        self._timer = self.loop.call_at(self._last_read + timeout, self._check_timeout)
        try:
            return await self._head
        except BaseException:  # failed, or our caller gave up (its client went away): not reusable
            self.abort()
            raise

    async def _write_stream(self, body: AsyncIterable[bytes], chunked: bool) -> None:
        try:
            async for chunk in body:
                if self.closed:  # the upstream answered early, or failed: its head future says which
                    break
                if chunk:
                    self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                    await self._writable.wait()
            if chunked and not self.closed:
                self.transport.write(b"0\r\n\r\n")
        except BaseException:
            self.abort()
            raise

    def finish(self, reusable: bool) -> None:
        self._cancel_timer()
        if reusable and not self.closed and not self._head_only and self._keep_alive:
            self.pool.put_back(self)
        else:
            self.abort()

    def abort(self) -> None:
        self._cancel_timer()
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def pause(self) -> None:
        if not self._paused and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def _check_timeout(self) -> None:
        self._timer = None
        idle = self.loop.time() - self._last_read
        if self._paused or idle < self._timeout:  # our reader is slow, or data came meanwhile
            self._timer = self.loop.call_at(self.loop.time() + self._timeout - (0 if self._paused else idle),
                                            self._check_timeout)
            return
        self._fail(ReadTimeout(f"no data for {self._timeout:g} s"))
        self.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, error: UpstreamError) -> None:
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        elif self._response is not None and not self._response._complete:
            self._response._end(error)

    # --- asyncio's callbacks ---

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(Disconnected(f"malformed answer: {err}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        self._writable.set()  # a writer waiting on a full buffer learns of the close
        if self._response is not None and self._until_close and not self._response._complete:
            self._response._end()
            return
        reason = f"connection lost: {exc}" if exc else "the upstream closed the connection"
        self._fail(Disconnected(reason))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # --- httptools' callbacks ---

    def on_message_begin(self) -> None:
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # 100 Continue and the like: the answer follows
            return
        self._response = Response(self, status, self._headers)
        self._keep_alive = self._parser.should_keep_alive()
        names = {name for name, _ in self._headers}
        self._until_close = (b"content-length" not in names and b"transfer-encoding" not in names
                             and status not in (204, 304))
        if self._head_only:
            self._response._end()
        if not self._head.done():
            self._head.set_result(self._response)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        if self._response is not None and not self._response._complete:
            self._cancel_timer()
            self._response._end()


class Pool:
    """Keep-alive connections to one upstream: "http://host:port" or "unix:/path/to.sock"."""

    def __init__(self, upstream: str, connect_timeout: float):
        self.connect_timeout = connect_timeout
        self._idle: deque[Connection] = deque()
        if upstream.startswith("unix:"):
            self.unix_path, self.host, self.port = upstream.removeprefix("unix:"), "", 0
            self.authority = b"localhost"  # HTTP needs a host even on a unix socket
        else:
            parts = urlsplit(upstream)
            self.unix_path, self.host, self.port = "", parts.hostname or "", parts.port or 80
            self.authority = parts.netloc.encode("latin-1")

    async def request(self, method: str, target: str, headers: dict[str, str],
                      body: bytes | AsyncIterable[bytes], timeout: float, fresh: bool = False) -> Response:
        """Send a request (target: path and query, already encoded); its answer once its head
        has arrived. A streamed body is sent chunked, unless headers give its length. `fresh`:
        on a new connection (the pooled ones may be as dead as the one that just failed)."""
        chunked = not isinstance(body, bytes) and "content-length" not in headers
        head = encode_head(method, target, self.authority, headers, body, chunked)
        connection = await (self.connect() if fresh else self.checkout())
        return await connection.send(head, body, chunked, method == "HEAD", timeout)

    async def checkout(self) -> Connection:
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_REUSE_S:
                return connection
            connection.abort()
        return await self.connect()

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.unix_path:
                    _, connection = await loop.create_unix_connection(lambda: Connection(self), self.unix_path)
                else:
                    transport, connection = await loop.create_connection(lambda: Connection(self),
                                                                         self.host, self.port)
                    set_dead_peer_options(transport.get_extra_info("socket"))
        except TimeoutError:
            raise ConnectFailed(f"did not accept a connection within {self.connect_timeout:g} s") from None
        except OSError as err:
            # asyncio's own loop puts "Connect call failed (address)" in strerror; say the cause.
            raise ConnectFailed(f"refused the connection: {os.strerror(err.errno) if err.errno else err}") from None
        return connection

    def put_back(self, connection: Connection) -> None:
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.append(connection)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().abort()


def set_dead_peer_options(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)


def encode_head(method: str, target: str, authority: bytes, headers: dict[str, str],
                body: bytes | AsyncIterable[bytes], chunked: bool) -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1"), b"host: " + authority]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in headers.items()
              if name != "content-length" or not isinstance(body, bytes)]
    if chunked:
        lines.append(b"transfer-encoding: chunked")
    elif isinstance(body, bytes) and (body or method not in NO_BODY_METHODS):
        lines.append(b"content-length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n"


class Pools:
    """One pool per upstream, made on first use."""

    def __init__(self, connect_timeout: float):
        self.connect_timeout = connect_timeout
        self._pools: dict[str, Pool] = {}

    def get(self, upstream: str) -> Pool:
        pool = self._pools.get(upstream)
        if pool is None:
            pool = self._pools[upstream] = Pool(upstream, self.connect_timeout)
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()

