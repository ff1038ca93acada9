"""The api's HTTP endpoints, served behind Envoy: the status page (/ and /static/*), /health,
/stats, /metrics, /mesh/*, and the /service/{type} requests Envoy hands to Python (the
envelope, and names it has no route for yet). Handlers translate HTTP to the domain and
back; the sums and rules they apply live in pure functions here and in routing.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from contextlib import asynccontextmanager

import grpc
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from services.api import metrics, openai, peers, status_page
from services.api.envelope import envelope
from services.api.errors import ApiError, unavailable
from services.api.node import ApiNode
from services.api.resolve import resolve
from services.api.routing import routing_stats
from services.common import capabilities, grpcclient
from services.common.config import Config
from services.common.rpc import dht_pb2, router_pb2

EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"
SERVICE_PREFIX = b"/service/"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def node_status(components: Mapping[str, str], backends: Mapping[str, bool],
                gateway: router_pb2.GatewayStatus | None) -> str:
    """unhealthy: Envoy cannot carry requests (not LIVE, or it never accepted a configuration);
    degraded: a component or a local backend is down, or the router does not answer."""
    if components.get("gateway") != "SERVING" or (gateway is not None and gateway.acked_version == 0):
        return "unhealthy"
    if gateway is None or any(s != "SERVING" for s in components.values()) or not all(backends.values()):
        return "degraded"
    return "healthy"


def gateway_view(gateway: router_pb2.GatewayStatus | None) -> dict | None:
    if gateway is None:
        return None
    return {"connected": gateway.connected, "acked_version": gateway.acked_version,
            "last_nack": gateway.last_nack or None}


def node_of(request: Request) -> ApiNode:
    return request.app.state.node


async def health(request: Request) -> Response:
    node = node_of(request)
    components, overlay, dht, local, gateway = await asyncio.gather(
        node.component_health(), node.overlay(), node.dht_stats(), node.local_services(), node.gateway_status())
    backends = {s.name: s.healthy for s in local or []}
    status = node_status(components, backends, gateway)
    return JSONResponse({
        "status": status, "worker_id": node.cfg.worker_id, "vpn_ip": overlay.overlay_ip or None,
        "vpn_reason": overlay.reason or None, "services": sorted(n for n, ok in backends.items() if ok),
        "dht_enabled": components["dht"] == "SERVING", "dht_peers": dht.known_peers if dht else None,
        "uptime": round(time.time() - node.started_at, 3), "started_at": node.started_at,
        "version": node.version, "components": components,
        "backends": {n: "healthy" if ok else "unhealthy" for n, ok in backends.items()},
        "unavailable": dict(node.cfg.unavailable), "gateway": gateway_view(gateway),
        "client_auth": node.cfg.client_auth, "access": access(node.cfg),
    }, status_code=503 if status == "unhealthy" else 200)


def access(cfg: Config) -> str:
    """Who may use /v1 and /service on the client port, in a sentence."""
    if cfg.client_auth == "open":
        return "open: anyone who reaches this port may use every service and model, with no key and no limit"
    return "an API key of the mesh (meshworker keys)" + (", except from loopback" if cfg.client_auth_loopback else "")


def backend_view(s: router_pb2.LocalService) -> dict:
    return {"name": s.name, "healthy": s.healthy, "model": s.model or None,
            "load_seconds": s.load_seconds or None, "rss_bytes": s.rss_bytes or None,
            "last_error": s.last_error or None}


async def stats(request: Request) -> Response:
    node = node_of(request)
    caps, overlay, local, totals, counters = await asyncio.gather(
        asyncio.to_thread(capabilities.collect, node.cfg.latency_peer), node.overlay(),
        node.local_services(), node.cluster_totals(), node.router_counters())
    return JSONResponse({
        "worker_id": node.cfg.worker_id, "vpn_ip": overlay.overlay_ip or None,
        "services": sorted(s.name for s in local or [] if s.healthy), "capabilities": caps,
        "backends": [backend_view(s) for s in local or []],
        "routing": routing_stats(totals, counters, node.envelope),
    })


async def metrics_endpoint(request: Request) -> Response:
    node = node_of(request)
    health, envoy, backends = await asyncio.gather(node.component_health(), node.envoy.prometheus(),
                                                   metrics.backend_pages(node.cfg.services, node.backends))
    text = await metrics.exposition(node.metrics, node.channels, health, envoy, backends)
    return PlainTextResponse(text, media_type=EXPOSITION)


def as_json(message) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


async def mesh_services(request: Request) -> Response:
    try:
        reply = await node_of(request).router.MeshServices(router_pb2.MeshServicesRequest(),
                                                           timeout=grpcclient.DEADLINE_S * 2)
    except grpc.aio.AioRpcError:
        return unavailable("router_unavailable", "the router is not answering").response()
    return JSONResponse(as_json(reply))


async def mesh_peers(request: Request) -> Response:
    node = node_of(request)
    try:
        reply = await node.dht.ListPeers(dht_pb2.ListPeersRequest(), timeout=grpcclient.DEADLINE_S)
    except grpc.aio.AioRpcError:
        return unavailable("dht_unavailable", "the dht is not answering").response()
    clusters = await node.envoy.get_json("/clusters")
    return JSONResponse({"worker_id": node.cfg.worker_id, "checked_at": time.time(), **as_json(reply),
                         "forwarding": peers.forwarding(clusters) if clusters is not None else None})


async def service(request: Request) -> Response:
    """The envelope for a local service; for any other name, the router's answer.

    The name is taken from the raw path, as the client sent it: a percent-encoded name
    is no service name, so it cannot pass for another one."""
    node = node_of(request)
    name, slash, _ = request.scope["raw_path"][len(SERVICE_PREFIX):].decode("latin-1").partition("/")
    if not slash:
        if request.method != "POST":
            response = ApiError(405, "method_not_allowed", "use POST /service/{type}, or "
                                "/service/{type}/{path} for the backend's own API").response()
            response.headers["Allow"] = "POST"
            return response
        local = node.cfg.service(name)
        if local is not None:
            return await envelope(node, request, local)
    return await resolve(node, request, name)


async def http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own 404 and 405 in our error shape."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    response = ApiError(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}").response()
    response.headers.update(exc.headers or {})  # e.g. a 405's Allow
    return response


def create_app(cfg: Config, started_at: float,
               channels: Mapping[str, grpc.aio.Channel] | None = None) -> Starlette:
    """`channels` replaces the channel to a component (tests); the others come from cfg."""
    @asynccontextmanager
    async def lifespan(app: Starlette):
        app.state.node = ApiNode(cfg, started_at, channels)
        app.state.node.start()
        try:
            yield
        finally:
            await app.state.node.close()

    return Starlette(exception_handlers={HTTPException: http_error}, routes=[
        Route("/", status_page.page),
        Route("/static/{name}", status_page.static),
        Route("/health", health),
        Route("/stats", stats),
        Route("/metrics", metrics_endpoint),
        Route("/mesh/services", mesh_services),
        Route("/mesh/peers", mesh_peers),
        Route("/service/{rest:path}", service, methods=METHODS),
        Route("/v1/models", openai.models, methods=["GET"]),
        Route("/v1/{rest:path}", openai.unknown_model, methods=["POST"]),
    ], lifespan=lifespan)
