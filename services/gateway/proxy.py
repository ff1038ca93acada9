"""Streaming HTTP forwarding from the gateway to a backend (or, later, a peer gateway).

Request bodies flow to the upstream as they arrive and response bodies flow back as
they are produced: an OCR image or an LLM token stream is never held whole in memory.
Small bodies of known length are read in one piece, which costs less than chunking.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

import aiohttp
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from yarl import URL

from services.common.rpc import router_pb2
from services.common.upstream import open_session
from services.gateway.errors import GatewayError, StreamTooLarge, unavailable

SMALL_BODY = 256 * 1024
CONNECT_TIMEOUT_S = 5.0
# RFC 9110 §7.6.1: connection-specific fields are not forwarded; Host names the upstream.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "transfer-encoding", "upgrade", "host"})
# A relayed answer's length is set again by us (kept when known, chunked when not), and
# uvicorn adds its own Date and Server: relaying the backend's would send them twice.
NOT_RELAYED = HOP_BY_HOP | {"content-length", "date", "server"}


class Upstreams:
    """One keep-alive session per upstream, opened on first use."""

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[aiohttp.ClientSession, str]] = {}

    def get(self, upstream: str) -> tuple[aiohttp.ClientSession, str]:
        if upstream not in self._sessions:
            self._sessions[upstream] = open_session(upstream)
        return self._sessions[upstream]

    async def close(self) -> None:
        await asyncio.gather(*(session.close() for session, _ in self._sessions.values()))


def forward_headers(request: Request) -> dict[str, str]:
    """End-to-end headers, with the client appended to X-Forwarded-For (the backend sees
    who asked: a client, or a peer's overlay address for a forwarded request)."""
    headers = {k: v for k, v in request.headers.items() if k not in HOP_BY_HOP}
    if request.client is not None:
        prior = headers.get("x-forwarded-for")
        headers["x-forwarded-for"] = f"{prior}, {request.client.host}" if prior else request.client.host
    return headers


class LimitedBody:
    """A request body stream that stops with 413 once it passes the limit.

    aiohttp consumes it in its own writer and reports a failure there in its own terms,
    so the flag tells `send` afterwards that the limit, not the upstream, ended it.
    """

    def __init__(self, stream: AsyncIterator[bytes], limit: int):
        self.stream, self.limit, self.exceeded = stream, limit, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.stream:
            seen += len(chunk)
            if seen > self.limit:
                self.exceeded = True
                raise StreamTooLarge(self.limit)
            yield chunk


async def request_body(request: Request, length: int | None, limit: int) -> bytes | LimitedBody:
    # RFC 9112 §6.3: without Content-Length or Transfer-Encoding a request has no body (a GET),
    # and sending it on as a chunked stream would give the backend a body it never had.
    if length is None and "transfer-encoding" not in request.headers:
        return b""
    if length is not None and length <= SMALL_BODY:
        return await request.body()
    return LimitedBody(request.stream(), limit)


async def send(route: router_pb2.Route, upstreams: Upstreams, method: str, path: str, query: bytes,
               headers: dict[str, str], body: bytes | LimitedBody) -> aiohttp.ClientResponse:
    """Send the request upstream; map every failure we can name to its status."""
    session, base = upstreams.get(route.upstream)
    url = URL(base + path + (("?" + query.decode("latin-1")) if query else ""), encoded=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=route.timeout_seconds)
    request = functools.partial(session.request, method, url, headers=headers, data=body,
                                timeout=timeout, allow_redirects=False)
    try:
        try:
            upstream = await request()
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            # A pooled keep-alive connection can be dead (the backend restarted): one more
            # try on a fresh one, only when replaying the request is safe.
            if not (route.idempotent and isinstance(body, bytes)):
                raise
            upstream = await request()
    except GatewayError:
        raise
    except aiohttp.ConnectionTimeoutError:  # nothing was sent: another provider may serve it
        raise unavailable("backend_unavailable", f"{route.service} backend did not accept a connection "
                                                 f"within {CONNECT_TIMEOUT_S:g} s") from None
    except aiohttp.ClientConnectorError as err:
        raise unavailable("backend_unavailable", f"{route.service} backend refused the connection: "
                                                 f"{err.os_error.strerror or err}") from None
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise GatewayError(504, "backend_timeout", f"{route.service} backend did not answer within "
                                                   f"{route.timeout_seconds:g} s") from None
    except aiohttp.ClientError as err:
        if isinstance(body, LimitedBody) and body.exceeded:
            raise StreamTooLarge(body.limit) from None
        raise GatewayError(502, "bad_gateway", f"{route.service} backend failed: {err}") from None
    if isinstance(body, LimitedBody) and body.exceeded:  # the upstream answered before the end
        upstream.close()
        raise StreamTooLarge(body.limit)
    return upstream


async def stream_from(upstream: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The upstream's body as it arrives. If our client goes away first, the upstream
    connection is closed, which is how the backend learns to stop (an LLM stops
    generating); a body read to its end leaves the connection for reuse."""
    finished = False
    try:
        async for chunk in upstream.content.iter_any():
            yield chunk
        finished = True
    finally:
        if finished:
            upstream.release()
        else:
            upstream.close()


async def relay(upstream: aiohttp.ClientResponse, extra_headers: dict[str, str]) -> Response:
    """The upstream's answer with its status and end-to-end headers, streamed unless small."""
    raw = [(k.lower(), v) for k, v in upstream.raw_headers
           if k.decode("latin-1").lower() not in NOT_RELAYED]
    raw += [(k.lower().encode(), v.encode()) for k, v in extra_headers.items()]
    length = upstream.headers.get("Content-Length")
    if length is not None and length.isascii() and length.isdigit() and int(length) <= SMALL_BODY:
        response = Response(await upstream.read(), status_code=upstream.status)
    else:
        response = StreamingResponse(stream_from(upstream), status_code=upstream.status)
    response.raw_headers = raw + ([(b"content-length", length.encode())] if length else [])
    return response
