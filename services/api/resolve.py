"""A /service/{name}[...] request that Envoy had no route for: ask the router, then redirect.

Envoy sends a request here only when its route configuration names no cluster for the
service. The router's Resolve looks the service up (the seed's cache miss and DHT lookup)
and answers once Envoy holds the route, so a 307 to the same URL, which Envoy follows
internally (internal_redirect_policy), now reaches the right cluster. Envoy marks a
request it redirected with x-envoy-original-url; one that comes back here anyway is
answered 503, never redirected again. A client that starts too many lookups (names no
cache holds) is answered 429 (the router's per-client limit).
"""

from __future__ import annotations

import grpc
from starlette.requests import Request
from starlette.responses import Response

from services.api.errors import ApiError, no_such_service, too_many_lookups, unavailable
from services.api.node import ApiNode
from services.common.config import SERVICE_NAME
from services.common.rpc import router_pb2

# Resolve may wait on a DHT lookup and on Envoy acknowledging the new route.
RESOLVE_DEADLINE_S = 5.0
REDIRECTED = "x-envoy-original-url"
FORWARDED_FOR = "x-forwarded-for"


def decide(name: str, resolution: router_pb2.Resolution, redirected: bool) -> ApiError | None:
    """The error to answer for a resolution, or None to redirect to the same URL."""
    if resolution.kind == router_pb2.ROUTE_KIND_NONE:
        return no_such_service(name)
    if resolution.kind == router_pb2.ROUTE_KIND_LOCAL and not resolution.healthy:
        return unavailable("backend_unhealthy", f"{name} backend is failing its health checks")
    if redirected:
        return unavailable("route_pending", f"the gateway has no route for {name!r} yet")
    return None


def same_url(request: Request) -> str:
    """The request's own URL, absolute: Envoy follows only a fully qualified Location, and
    only to the scheme the request came with (x-forwarded-proto, set by Envoy)."""
    scheme = request.headers.get("x-forwarded-proto", "http")
    host = request.headers.get("host", "localhost")
    target = request.scope["raw_path"].decode("latin-1")
    query = request.scope["query_string"].decode("latin-1")
    return f"{scheme}://{host}{target}" + (f"?{query}" if query else "")


def client_of(request: Request) -> str:
    """The client's address as Envoy saw it: on the client listener Envoy drops what the
    client claims and appends the address that connected (use_remote_address), so it is
    the last entry of X-Forwarded-For ("" when the request did not come through Envoy)."""
    return request.headers.get(FORWARDED_FOR, "").rsplit(",", 1)[-1].strip()


async def resolve(node: ApiNode, request: Request, name: str) -> Response:
    # Read the body to its end first (Envoy bounds it): an answer while the client still
    # sends would reset the connection, and Envoy replays the body from its own copy.
    async for _ in request.stream():
        pass
    if not SERVICE_NAME.match(name):
        return no_such_service(name).response()
    try:
        resolution = await node.router.Resolve(router_pb2.ResolveRequest(service=name, client=client_of(request)),
                                                timeout=RESOLVE_DEADLINE_S)
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return too_many_lookups().response()
        return unavailable("router_unavailable", "the router is not answering").response()
    error = decide(name, resolution, REDIRECTED in request.headers)
    if error is not None:
        return error.response()
    return Response(status_code=307, headers={"location": same_url(request)})
