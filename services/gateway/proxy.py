"""Streaming HTTP forwarding from the gateway to a backend or to a peer gateway.

Request bodies flow to the upstream as they arrive and response bodies flow back as
they are produced: an OCR image or an LLM token stream is never held whole in memory.
Small bodies of known length are read in one piece, which costs less than chunking.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from services.common import httpclient
from services.common.rpc import router_pb2
from services.gateway.errors import GatewayError, StreamTooLarge, unavailable

SMALL_BODY = 256 * 1024
CONNECT_TIMEOUT_S = 5.0
# RFC 9110 §7.6.1: connection-specific fields are not forwarded; Host names the upstream.
# Expect is answered by our own server (uvicorn sends the 100 Continue), not again upstream.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "transfer-encoding", "upgrade", "host", "expect"})
# A relayed answer's length is set again by us (kept when known, chunked when not), and
# uvicorn adds its own Date and Server: relaying the backend's would send them twice.
NOT_RELAYED = frozenset(name.encode() for name in HOP_BY_HOP | {"content-length", "date", "server"})


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

    The client consumes it while sending, so StreamTooLarge comes out of the send; the
    flag also says so afterwards, should the upstream have answered before the end.
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


async def send(route: router_pb2.Route, upstreams: httpclient.Pools, method: str, path: str, query: bytes,
               headers: dict[str, str], body: bytes | LimitedBody) -> httpclient.Response:
    """Send the request upstream; map every failure we can name to its status."""
    pool = upstreams.get(route.upstream)
    target = path + ("?" + query.decode("latin-1") if query else "")
    replayable = route.idempotent and isinstance(body, bytes)
    try:
        try:
            upstream = await exchange(pool, method, target, headers, body, route.timeout_seconds, replayable)
        except httpclient.Disconnected:
            # The backend died (or closed a pooled connection) before answering, or before
            # finishing a small answer nobody has seen yet: one more try, on a fresh
            # connection, when replaying the request is safe. If the backend is down for
            # good, that try is refused: 503, and a forwarding peer moves on.
            if not replayable:
                raise
            try:
                upstream = await exchange(pool, method, target, headers, body, route.timeout_seconds, replayable,
                                          fresh=True)
            except httpclient.Disconnected as err:  # a fresh connection broke too: it is going down
                raise unavailable("backend_unavailable", f"{route.service} backend is going down: {err}") from None
    except httpclient.ConnectFailed as err:  # nothing was sent: another provider may serve it
        raise unavailable("backend_unavailable", f"{route.service} backend {err}") from None
    except httpclient.ReadTimeout:
        raise GatewayError(504, "backend_timeout", f"{route.service} backend did not answer within "
                                                   f"{route.timeout_seconds:g} s") from None
    except httpclient.UpstreamError as err:
        raise failed(route, err) from None
    if isinstance(body, LimitedBody) and body.exceeded:  # the upstream answered before the end
        upstream.close()
        raise StreamTooLarge(body.limit)
    return upstream


async def exchange(pool: httpclient.Pool, method: str, target: str, headers: dict[str, str],
                   body: bytes | LimitedBody, timeout: float, replayable: bool,
                   fresh: bool = False) -> httpclient.Response:
    """One try: the answer's head, and all of a small answer when the request may be replayed
    (a backend killed between the two writes of its answer must not cost the client it)."""
    upstream = await pool.request(method, target, headers, body, timeout, fresh=fresh)
    if replayable and upstream.small(SMALL_BODY):
        await upstream.receive_all()
    return upstream


def failed(route: router_pb2.Route, err: httpclient.UpstreamError) -> GatewayError:
    return GatewayError(502, "bad_gateway", f"{route.service} backend failed: {err}")


async def read_all(route: router_pb2.Route, upstream: httpclient.Response) -> bytes:
    """The whole answer; 502 if the backend fails before its end (killed mid-answer, say)."""
    try:
        return await upstream.read()
    except httpclient.UpstreamError as err:
        raise failed(route, err) from None


async def stream_from(upstream: httpclient.Response) -> AsyncIterator[bytes]:
    """The upstream's body as it arrives. If our client goes away first, the upstream
    connection is closed, which is how the backend learns to stop (an LLM stops
    generating); a body read to its end leaves the connection for reuse."""
    try:
        async for chunk in upstream.chunks():
            yield chunk
    finally:
        upstream.release()  # closes the connection unless the body was read to its end


async def relay(route: router_pb2.Route, upstream: httpclient.Response) -> Response:
    """The upstream's answer with its status and end-to-end headers, streamed unless small."""
    raw = [(k, v) for k, v in upstream.raw_headers if k not in NOT_RELAYED]
    length = upstream.header(b"content-length")
    if upstream.small(SMALL_BODY):
        response = Response(await read_all(route, upstream), status_code=upstream.status)
    else:
        response = StreamingResponse(stream_from(upstream), status_code=upstream.status)
    response.raw_headers = raw + ([(b"content-length", length)] if length else [])
    return response
