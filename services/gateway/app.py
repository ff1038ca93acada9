"""The HTTP gateway: /health, /stats, /metrics and /service/{type}[/{path}].

Handlers translate HTTP to the domain and back; routing decisions come from the table
the router pushes, so the request path makes no gRPC call when the route is known.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

import grpc
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from services.common import capabilities, grpcclient
from services.common.config import COMPONENTS, Config
from services.common.rpc import nebula_pb2, nebula_pb2_grpc, router_pb2
from services.gateway import metrics, paths, proxy
from services.gateway.control import RouterLink
from services.gateway.errors import GatewayError, StreamTooLarge, bad_request, no_such_service, unavailable

ROUTE_LABELS = {router_pb2.ROUTE_KIND_LOCAL: "local", router_pb2.ROUTE_KIND_FORWARDED: "forwarded"}
EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"


def node_status(components: dict[str, str], backends: dict[str, bool], has_table: bool) -> str:
    """unhealthy: the gateway cannot route at all; degraded: a part is down; else healthy."""
    if not has_table:
        return "unhealthy"
    if all(s == "SERVING" for s in components.values()) and all(backends.values()):
        return "healthy"
    return "degraded"


class Gateway:
    """Everything the handlers share: config, links to the components, upstream sessions."""

    def __init__(self, cfg: Config, started_at: float):
        self.cfg = cfg
        self.started_at = started_at
        self.version = version("meshworker")
        self.channels = {c: grpcclient.channel(cfg, c) for c in COMPONENTS}
        self.router = RouterLink(self.channels["router"])
        self.upstreams = proxy.Upstreams()
        self.metrics = metrics.GatewayMetrics()
        self.last_routing = router_pb2.RoutingStats()

    async def component_health(self) -> dict[str, str]:
        states = await asyncio.gather(*(grpcclient.health_status(c) for c in self.channels.values()))
        return {**dict(zip(self.channels, states)), "gateway": "SERVING"}

    def healthy_services(self) -> list[str]:
        return sorted(name for name, r in self.router.routes.items()
                      if r.kind == router_pb2.ROUTE_KIND_LOCAL and r.healthy)

    async def overlay(self) -> nebula_pb2.StatusResponse:
        try:
            return await nebula_pb2_grpc.NebulaAgentStub(self.channels["nebula-agent"]).Status(
                nebula_pb2.StatusRequest(), timeout=grpcclient.HEALTH_DEADLINE_S)
        except grpc.aio.AioRpcError:
            return nebula_pb2.StatusResponse(reason="nebula-agent is not answering")

    async def routing_stats(self) -> router_pb2.RoutingStats:
        """The router's counters once our pending outcomes reached it; else the last known."""
        if await self.router.flush():
            try:
                self.last_routing = await self.router.stub.Stats(
                    router_pb2.RouterStatsRequest(), timeout=grpcclient.HEALTH_DEADLINE_S)
            except grpc.aio.AioRpcError:
                pass
        return self.last_routing

    async def route(self, service: str) -> router_pb2.Route:
        route = self.router.routes.get(service)
        if route is None:
            try:
                route = await self.router.stub.Resolve(router_pb2.ResolveRequest(service=service),
                                                       timeout=grpcclient.DEADLINE_S)
            except grpc.aio.AioRpcError:
                raise unavailable("router_unavailable", "the router is not answering and "
                                  f"{service!r} is not in the last route table") from None
        if route.kind == router_pb2.ROUTE_KIND_NONE:
            raise no_such_service(service)
        if not route.healthy:
            raise unavailable("backend_unhealthy", f"{service} backend is failing its health checks")
        return route

    async def close(self) -> None:
        await self.upstreams.close()
        await asyncio.gather(*(c.close() for c in self.channels.values()))


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


async def health(request: Request) -> Response:
    gw = gateway(request)
    components, overlay = await asyncio.gather(gw.component_health(), gw.overlay())
    backends = {n: r.healthy for n, r in gw.router.routes.items() if r.kind == router_pb2.ROUTE_KIND_LOCAL}
    status = node_status(components, backends, gw.router.table_version > 0)
    return JSONResponse({
        "status": status, "worker_id": gw.cfg.worker_id, "vpn_ip": overlay.overlay_ip or None,
        "vpn_reason": overlay.reason or None, "services": gw.healthy_services(),
        "dht_enabled": components["dht"] == "SERVING", "uptime": round(time.time() - gw.started_at, 3),
        "started_at": gw.started_at, "version": gw.version, "components": components,
        "backends": {n: "healthy" if ok else "unhealthy" for n, ok in backends.items()},
        "router_connected": gw.router.connected,
    }, status_code=503 if status == "unhealthy" else 200)


async def stats(request: Request) -> Response:
    gw = gateway(request)
    routing, overlay, caps = await asyncio.gather(
        gw.routing_stats(), gw.overlay(), asyncio.to_thread(capabilities.collect, gw.cfg.latency_peer))
    return JSONResponse({
        "worker_id": gw.cfg.worker_id, "vpn_ip": overlay.overlay_ip or None,
        "services": gw.healthy_services(), "capabilities": caps,
        "routing": {field: getattr(routing, field) for field in router_pb2.RoutingStats.DESCRIPTOR.fields_by_name},
    })


async def metrics_endpoint(request: Request) -> Response:
    gw = gateway(request)
    text = await metrics.exposition(gw.metrics, gw.channels, await gw.component_health())
    return PlainTextResponse(text, media_type=EXPOSITION)


async def read_json(request: Request, limit: int) -> bytes:
    paths.check_body_length(request.headers.get("content-length"), limit)
    body = b"".join([chunk async for chunk in proxy.LimitedBody(request.stream(), limit)])
    try:
        json.loads(body)
    except ValueError:
        raise bad_request("invalid_json", "the request body is not valid JSON") from None
    return body


async def invoke(gw: Gateway, request: Request, route: router_pb2.Route) -> Response:
    """POST /service/{type}: the backend's answer wrapped in the seed's envelope."""
    body = await read_json(request, gw.cfg.max_body_bytes)
    upstream = await proxy.send(route, gw.upstreams, "POST", route.invoke_path, b"",
                                {"content-type": "application/json"}, body)
    async with upstream:
        answer = await upstream.read()
    if upstream.status >= 400:
        return Response(answer, status_code=upstream.status, media_type=upstream.content_type)
    try:
        data: Any = json.loads(answer)
    except ValueError:
        raise GatewayError(502, "bad_gateway", f"{route.service} backend answered non-JSON") from None
    return JSONResponse({"status": "success", "message": f"Processed by {route.worker_id}",
                         "service": route.service, "worker_id": route.worker_id, "data": data})


async def passthrough(gw: Gateway, request: Request, route: router_pb2.Route, sub_path: str) -> Response:
    """ANY /service/{type}/{path}: a transparent, streaming proxy to the backend's own API."""
    limit = gw.cfg.max_body_bytes
    length = paths.check_body_length(request.headers.get("content-length"), limit)
    body = await proxy.request_body(request, length, limit)
    upstream = await proxy.send(route, gw.upstreams, request.method, sub_path,
                                request.scope["query_string"], proxy.forward_headers(request), body)
    return await proxy.relay(upstream, {})


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
    gw = gateway(request)
    started = time.perf_counter()
    name, route = metrics.UNKNOWN_SERVICE, None
    try:
        requested, sub_path = paths.split_service_path(request.scope["raw_path"])
        route = await gw.route(requested)
        name = requested
        if sub_path:
            response = await passthrough(gw, request, route, sub_path)
        elif request.method == "POST":
            response = await invoke(gw, request, route)
        else:
            raise GatewayError(405, "method_not_allowed", "use POST /service/{type}, or "
                                                          "/service/{type}/{path} for the backend's API")
    except GatewayError as err:
        if isinstance(err, StreamTooLarge):
            await discard_rest(request, gw.cfg.max_body_bytes)
        response = err.response()
    label = ROUTE_LABELS.get(route.kind, "local") if route else "local"
    response.headers["X-Mesh-Route"] = label
    gw.metrics.observe(name, label, response.status_code, time.perf_counter() - started)
    if route is not None:
        gw.router.report(route.service, route.kind, response.status_code < 500)
    return response


class MeshHeaders:
    """ASGI middleware: every response names the worker that served it and the route.

    Headers a handler already set (a forwarded answer names the peer) are kept.
    """

    def __init__(self, app, worker_id: str):
        self.app = app
        self.defaults = ((b"x-mesh-worker", worker_id.encode()), (b"x-mesh-route", b"local"))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {k.lower() for k, _ in headers}
                message["headers"] = headers + [h for h in self.defaults if h[0] not in present]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(cfg: Config, started_at: float) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette):
        gw = Gateway(cfg, started_at)
        app.state.gateway = gw
        async with asyncio.TaskGroup() as tasks:
            background = [tasks.create_task(gw.router.watch_routes()),
                          tasks.create_task(gw.router.send_outcomes())]
            yield
            for task in background:
                task.cancel()
        await gw.close()

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Starlette(routes=[
        Route("/health", health),
        Route("/stats", stats),
        Route("/metrics", metrics_endpoint),
        Route("/service/{rest:path}", service, methods=methods),
    ], lifespan=lifespan, middleware=[Middleware(MeshHeaders, worker_id=cfg.worker_id)])
