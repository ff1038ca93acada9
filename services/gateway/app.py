"""The HTTP gateway: /health, /stats, /metrics, /mesh/* and /service/{type}[/{path}].

Handlers translate HTTP to the domain and back; routing decisions come from the table
the router pushes, so the request path makes no gRPC call when the route is known.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import grpc
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from services.common import capabilities, grpcclient
from services.common.config import Config
from services.common.rpc import dht_pb2, router_pb2
from services.gateway import metrics
from services.gateway.errors import unavailable
from services.gateway.node import Gateway
from services.gateway.service import service

EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"


def node_status(components: dict[str, str], backends: dict[str, bool], has_table: bool) -> str:
    """unhealthy: the gateway cannot route at all; degraded: a part is down; else healthy."""
    if not has_table:
        return "unhealthy"
    if all(s == "SERVING" for s in components.values()) and all(backends.values()):
        return "healthy"
    return "degraded"


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


async def health(request: Request) -> Response:
    gw = gateway(request)
    components, overlay, dht = await asyncio.gather(gw.component_health(), gw.overlay(), gw.dht_stats())
    backends = gw.local_backends()
    status = node_status(components, backends, gw.router.table_version > 0)
    return JSONResponse({
        "status": status, "worker_id": gw.cfg.worker_id, "vpn_ip": overlay.overlay_ip or None,
        "vpn_reason": overlay.reason or None, "services": gw.healthy_services(),
        "dht_enabled": components["dht"] == "SERVING", "dht_peers": dht.known_peers if dht else None,
        "uptime": round(time.time() - gw.started_at, 3), "started_at": gw.started_at,
        "version": gw.version, "components": components,
        "backends": {n: "healthy" if ok else "unhealthy" for n, ok in backends.items()},
        "unavailable": dict(gw.cfg.unavailable),
        "router_connected": gw.router.connected,
    }, status_code=503 if status == "unhealthy" else 200)


async def stats(request: Request) -> Response:
    gw = gateway(request)
    routing, overlay, caps, backends = await asyncio.gather(
        gw.routing_stats(), gw.overlay(), asyncio.to_thread(capabilities.collect, gw.cfg.latency_peer),
        gw.local_services())
    return JSONResponse({
        "worker_id": gw.cfg.worker_id, "vpn_ip": overlay.overlay_ip or None,
        "services": gw.healthy_services(), "capabilities": caps, "backends": backends,
        "routing": {field: getattr(routing, field) for field in router_pb2.RoutingStats.DESCRIPTOR.fields_by_name},
    })


async def metrics_endpoint(request: Request) -> Response:
    gw = gateway(request)
    text = await metrics.exposition(gw.metrics, gw.channels, await gw.component_health())
    return PlainTextResponse(text, media_type=EXPOSITION)


def as_json(message) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


async def mesh_services(request: Request) -> Response:
    gw = gateway(request)
    try:
        reply = await gw.router.stub.MeshServices(router_pb2.MeshServicesRequest(),
                                                  timeout=grpcclient.DEADLINE_S * 2)
    except grpc.aio.AioRpcError:
        return unavailable("router_unavailable", "the router is not answering").response()
    return JSONResponse(as_json(reply))


async def mesh_peers(request: Request) -> Response:
    gw = gateway(request)
    try:
        reply = await gw.dht.ListPeers(dht_pb2.ListPeersRequest(), timeout=grpcclient.DEADLINE_S)
    except grpc.aio.AioRpcError:
        return unavailable("dht_unavailable", "the dht is not answering").response()
    return JSONResponse({"worker_id": gw.cfg.worker_id, "checked_at": time.time(), **as_json(reply)})


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
        Route("/mesh/services", mesh_services),
        Route("/mesh/peers", mesh_peers),
        Route("/service/{rest:path}", service, methods=methods),
    ], lifespan=lifespan, middleware=[Middleware(MeshHeaders, worker_id=cfg.worker_id)])
