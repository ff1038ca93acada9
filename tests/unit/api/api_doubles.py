"""Test doubles for what lies outside the api process: Envoy's admin interface, the
router's gRPC server, and a real backend; and the api itself served on a unix socket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

import aiohttp
import grpc
import uvicorn
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.api.app import create_app
from services.common import unix_socket
from services.common.config import Config
from services.common.rpc import router_pb2, router_pb2_grpc

MAX_BODY = 1024  # the test node's max_body_bytes (conftest.py's `api`)


class FakeEnvoyAdmin:
    """Envoy's admin endpoints the api reads, answering what the test sets."""

    def __init__(self) -> None:
        self.live = True
        self.stats: list[dict] = []
        self.prometheus = "# TYPE envoy_cluster_upstream_rq_total counter\n" \
                          'envoy_cluster_upstream_rq_total{envoy_cluster_name="local_echo"} 7\n'
        self.filters: list[str] = []
        self.app = web.Application()
        self.app.router.add_get("/ready", self.ready)
        self.app.router.add_get("/stats", self.stats_json)
        self.app.router.add_get("/stats/prometheus", self.stats_prometheus)

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(text="LIVE\n" if self.live else "PRE_INITIALIZING\n", status=200 if self.live else 503)

    async def stats_json(self, request: web.Request) -> web.Response:
        assert request.query["format"] == "json"
        self.filters.append(request.query["filter"])
        return web.json_response({"stats": self.stats})

    async def stats_prometheus(self, request: web.Request) -> web.Response:
        return web.Response(text=self.prometheus)


def backend_app() -> web.Application:
    """A backend whose invoke paths answer each way the envelope must handle."""
    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=b'{"echo":' + await request.read() + b"}", content_type="application/json")

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="plain words")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(body=b'{"detail":"model exploded"}', status=500, content_type="application/problem+json")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1)  # past the service's 0.3 s timeout; teardown waits for it
        return web.json_response({})

    app = web.Application()
    for path, handler in (("/echo", echo), ("/text", text), ("/fail", fail), ("/slow", slow)):
        app.router.add_post(path, handler)
    return app


class FakeRouter(router_pb2_grpc.RouterServicer):
    """The router's answers the api asks for, set by the test; Resolve calls are recorded."""

    def __init__(self) -> None:
        self.resolution = router_pb2.Resolution(kind=router_pb2.ROUTE_KIND_FORWARDED, healthy=True)
        self.resolved: list[str] = []
        self.clients: list[str] = []  # each Resolve's client address
        self.over_limit = False  # Resolve answers RESOURCE_EXHAUSTED, as for a client past its lookups
        self.counters = router_pb2.RouterCounters()
        self.gateway = router_pb2.GatewayStatus(connected=True, version=3, acked_version=3)
        self.local = [router_pb2.LocalService(name="echo", healthy=True, model="m1")]
        self.health = health.aio.HealthServicer()

    async def Resolve(self, request, context):
        self.resolved.append(request.service)
        self.clients.append(request.client)
        if self.over_limit:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many lookups")
        return router_pb2.Resolution(service=request.service, kind=self.resolution.kind,
                                     healthy=self.resolution.healthy)

    async def Stats(self, request, context):
        return self.counters

    async def Gateway(self, request, context):
        return self.gateway

    async def ListLocalServices(self, request, context):
        return router_pb2.ListLocalServicesResponse(services=self.local)

    async def MeshServices(self, request, context):
        provider = router_pb2.ProviderView(worker_id="w2", url="https://10.0.0.2:8443", healthy=True)
        return router_pb2.MeshServicesResponse(services=[router_pb2.ServiceView(name="llm", providers=[provider])])

    @staticmethod
    def add_to_server(servicer: FakeRouter, server: grpc.aio.Server) -> None:
        """The Router service and gRPC health on one server, as the real router has."""
        router_pb2_grpc.add_RouterServicer_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(servicer.health, server)


async def serving_health() -> health.aio.HealthServicer:
    """A gRPC health servicer that answers SERVING."""
    servicer = health.aio.HealthServicer()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return servicer


@contextlib.asynccontextmanager
async def serving_api(cfg: Config, channels: Mapping[str, grpc.aio.Channel]) -> AsyncIterator[aiohttp.ClientSession]:
    """The api app on uvicorn at cfg.api_socket; yields a client session to it."""
    server = uvicorn.Server(uvicorn.Config(create_app(cfg, 1000.0, channels), lifespan="on", ws="none",
                                           log_config=None, access_log=False))
    task = asyncio.create_task(server.serve(sockets=[unix_socket.listening(cfg.api_socket)]))
    try:
        while not server.started:
            assert not task.done(), "the api did not start"
            await asyncio.sleep(0.01)
        async with aiohttp.ClientSession("http://api", connector=aiohttp.UnixConnector(str(cfg.api_socket))) as client:
            yield client
    finally:
        server.should_exit = True
        await task
