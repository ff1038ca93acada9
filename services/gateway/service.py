"""ANY /service/{type}[/{path}]: serve locally, or forward to a peer gateway that hosts it.

POST /service/{type} wraps the backend's JSON answer in the seed's envelope; a path after
the type is a transparent, streaming proxy to the backend's own API. A request forwarded
to us must prove it comes from the mesh, and is served locally or not at all.
"""

from __future__ import annotations

import functools
import json
import time

from starlette.requests import Request
from starlette.responses import Response

from services.common.rpc import router_pb2
from services.gateway import forwarding, metrics, paths, proxy
from services.gateway.errors import GatewayError, StreamTooLarge, bad_request, unavailable
from services.gateway.node import Gateway, live_endpoints

ROUTE_LABELS = {router_pb2.ROUTE_KIND_LOCAL: "local", router_pb2.ROUTE_KIND_FORWARDED: "forwarded"}
# Failures that happen before a request reaches any backend: a peer marks its answer with
# UNSERVED so the forwarding node may try another provider even for a non-idempotent service.
UNSERVED = b"x-mesh-unserved"
UNSERVED_CODES = frozenset({"no_such_service", "backend_unhealthy", "backend_unavailable",
                            "not_hosted_here", "router_unavailable"})


async def read_body(request: Request, limit: int) -> bytes:
    paths.check_body_length(request.headers.get("content-length"), limit)
    return b"".join([chunk async for chunk in proxy.LimitedBody(request.stream(), limit)])


def require_json(body: bytes, error: GatewayError | None = None) -> bytes:
    try:
        json.loads(body)
    except ValueError:
        raise error or bad_request("invalid_json", "the request body is not valid JSON") from None
    return body


async def accept_forwarded(gw: Gateway, request: Request) -> bytes | None:
    """Check a forwarded request's proof (403 unless it holds); its body when digested."""
    headers = dict(request.headers)
    target = request.scope["raw_path"].decode("latin-1")
    if request.scope["query_string"]:
        target += "?" + request.scope["query_string"].decode("latin-1")
    try:
        forwarding.check(headers, request.method, target, gw.trust, gw.nonces, time.time())
        if headers.get(forwarding.BODY) == forwarding.UNSIGNED_BODY:
            return None
        body = await read_body(request, gw.cfg.max_body_bytes)
        forwarding.check_body(headers, body)
    except forwarding.Refused as err:
        raise GatewayError(403, "forbidden", str(err)) from None
    return body


async def invoke(gw: Gateway, route: router_pb2.Route, body: bytes) -> Response:
    """POST /service/{type} served here: the backend's answer wrapped in the seed's envelope."""
    headers = {"content-type": "application/json", **gw.cfg.service(route.service).auth_headers}
    upstream = await proxy.send(route, gw.upstreams, "POST", route.invoke_path, b"", headers, body)
    answer = await proxy.read_all(route, upstream)
    if upstream.status >= 400:
        return Response(answer, status_code=upstream.status,
                        media_type=(upstream.header(b"content-type") or b"application/octet-stream").decode("latin-1"))
    data = answer.strip()
    if not declares_json(upstream.header(b"content-type")) or not data:
        raise GatewayError(502, "bad_gateway", f"{route.service} backend did not answer JSON")
    # The backend's JSON goes into the envelope as it came, trusted on its content type:
    # decoding it (to check it, or to re-encode it) cost 60 µs for one embedding and 1.9 ms
    # for a batch of 32, on every request.
    return Response(envelope_head(gw.cfg.worker_id, route.service) + data + b"}", media_type="application/json")


def declares_json(content_type: bytes | None) -> bool:
    """application/json, or a +json type (RFC 6839), with or without parameters."""
    media = (content_type or b"").split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


@functools.cache
def envelope_head(worker_id: str, service: str) -> bytes:
    """The seed's envelope up to its data, which follows: the same for every answer."""
    head = json.dumps({"status": "success", "message": f"Processed by {worker_id}", "service": service,
                       "worker_id": worker_id}, separators=(",", ":"))
    return head[:-1].encode() + b',"data":'


async def passthrough(gw: Gateway, request: Request, route: router_pb2.Route, sub_path: str,
                      body: bytes | proxy.LimitedBody) -> Response:
    """ANY /service/{type}/{path} served here: a transparent, streaming proxy."""
    headers = {**proxy.forward_headers(request), **gw.cfg.service(route.service).auth_headers}
    upstream = await proxy.send(route, gw.upstreams, request.method, sub_path,
                                request.scope["query_string"], headers, body)
    return await proxy.relay(route, upstream)


async def request_body(gw: Gateway, request: Request, envelope: bool) -> bytes | proxy.LimitedBody:
    if envelope:
        return require_json(await read_body(request, gw.cfg.max_body_bytes))
    length = paths.check_body_length(request.headers.get("content-length"), gw.cfg.max_body_bytes)
    return await proxy.request_body(request, length, gw.cfg.max_body_bytes)


async def forward(gw: Gateway, request: Request, route: router_pb2.Route, body: bytes | proxy.LimitedBody,
                  outcome: router_pb2.Outcome) -> Response:
    """Send the request to the best peer whose record is live; move on to the next when one
    cannot be reached (or, for idempotent services with a replayable body, when one fails
    after sending)."""
    target = request.scope["raw_path"].decode("latin-1")
    query = request.scope["query_string"]
    signed = forwarding.sign(gw.identity, gw.trust, gw.cfg.worker_id, request.method,
                             target + ("?" + query.decode("latin-1") if query else ""),
                             body if isinstance(body, bytes) else None, time.time())
    headers = {**proxy.forward_headers(request), **signed}
    replayable = route.idempotent and isinstance(body, bytes)
    endpoints = live_endpoints(route)
    for position, endpoint in enumerate(endpoints):
        outcome.worker_id = endpoint.worker_id
        hop = router_pb2.Route(service=route.service, upstream=endpoint.url,
                               timeout_seconds=route.timeout_seconds, idempotent=route.idempotent)
        last = position == len(endpoints) - 1
        try:
            upstream = await proxy.send(hop, gw.upstreams, request.method, target, query, headers, body)
        except GatewayError as err:
            unreached = err.code == "backend_unavailable"
            if last or not (unreached or (replayable and err.status in (502, 504))):
                raise
            outcome.failed_workers.append(endpoint.worker_id)
            continue
        if upstream.header(UNSERVED) is not None and not last and isinstance(body, bytes):
            upstream.release()
            outcome.failed_workers.append(endpoint.worker_id)
            continue
        return await proxy.relay(route, upstream)
    raise unavailable("no_provider", f"no provider of {route.service} could be reached")


async def dispatch(gw: Gateway, request: Request, outcome: router_pb2.Outcome) -> Response:
    requested, sub_path = paths.split_service_path(request.scope["raw_path"])
    forwarded_to_us = forwarding.HOP in request.headers
    body = await accept_forwarded(gw, request) if forwarded_to_us else None
    route, outcome.from_table = await gw.route(requested)
    outcome.service, outcome.kind = requested, route.kind
    envelope = not sub_path
    if envelope and request.method != "POST":
        raise GatewayError(405, "method_not_allowed", "use POST /service/{type}, or "
                                                      "/service/{type}/{path} for the backend's API")
    if body is None:
        body = await request_body(gw, request, envelope)
    if route.kind == router_pb2.ROUTE_KIND_FORWARDED:
        if forwarded_to_us:  # a forwarded request is never forwarded again: no loops
            raise unavailable("not_hosted_here", f"{gw.cfg.worker_id} does not serve {requested} itself")
        return await forward(gw, request, route, body, outcome)
    outcome.worker_id = gw.cfg.worker_id
    return await (invoke(gw, route, body) if envelope else passthrough(gw, request, route, sub_path, body))


async def discard_rest(request: Request, bound: int) -> None:
    """Read and drop what the client still sends past the limit, up to a bound, before
    answering 413 (nginx's lingering close): closing with unread data makes the kernel
    send a reset, and a client still sending would lose the 413 with the connection."""
    deadline = time.monotonic() + 2.0
    while bound > 0 and time.monotonic() < deadline:
        message = await request.receive()
        bound -= len(message.get("body", b""))
        if not message.get("more_body"):
            return


async def service(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    started = time.perf_counter()
    outcome = router_pb2.Outcome(service=metrics.UNKNOWN_SERVICE)
    try:
        response = await dispatch(gw, request, outcome)
    except GatewayError as err:
        if isinstance(err, StreamTooLarge):
            await discard_rest(request, gw.cfg.max_body_bytes)
        response = err.response()
        if err.code in UNSERVED_CODES:
            response.headers[UNSERVED.decode()] = "1"
    label = ROUTE_LABELS.get(outcome.kind, "local")
    response.headers["X-Mesh-Route"] = label
    outcome.latency_seconds = time.perf_counter() - started
    outcome.success = response.status_code < 500
    gw.metrics.observe(outcome.service, label, response.status_code, outcome.latency_seconds)
    if outcome.kind != router_pb2.ROUTE_KIND_NONE:
        gw.router.report(outcome)
    return response
