"""One way to serve gRPC for every component: health, reflection, metrics, clean stop.

A component builds a `ComponentServer`, adds its servicers, `start()`s it (bound, but
health still NOT_SERVING), marks itself ready once its dependencies answer, and awaits
`run_until_stopped()`, which on SIGTERM or SIGINT turns health NOT_SERVING, lets RPCs in
flight finish for a grace period, and stops.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, generate_latest

from services.common import unix_socket
from services.common.config import Config
from services.common.rpc import metrics_pb2, metrics_pb2_grpc

log = logging.getLogger(__name__)
GRACE_S = 5.0


class MetricsServicer(metrics_pb2_grpc.MetricsServicer):
    def __init__(self, registry: CollectorRegistry):
        self._registry = registry

    async def Collect(self, request, context):
        return metrics_pb2.CollectResponse(exposition=generate_latest(self._registry).decode())


class ComponentServer:
    def __init__(self, cfg: Config, component: str, registry: CollectorRegistry):
        self.component = component
        self.target = cfg.grpc_target(component)
        self.server = grpc.aio.server()
        self.health = health.aio.HealthServicer()
        self._service_names = [health.SERVICE_NAME, reflection.SERVICE_NAME]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.add(metrics_pb2_grpc.add_MetricsServicer_to_server, MetricsServicer(registry),
                 metrics_pb2.DESCRIPTOR.services_by_name["Metrics"].full_name)

    def add(self, add_to_server: Callable, servicer: object, full_name: str) -> None:
        add_to_server(servicer, self.server)
        self._service_names.append(full_name)

    async def start(self) -> None:
        reflection.enable_server_reflection(self._service_names, self.server)
        await self.set_serving(False)
        self._bind_unix(Path(self.target.removeprefix("unix:")))
        await self.server.start()
        log.info("%s gRPC listening on %s", self.component, self.target)

    def _bind_unix(self, path: Path) -> None:
        # Mode 0600, so no other local user can call Announce or enrollment.
        unix_socket.prepared(path)
        with unix_socket.created_private():
            self.server.add_insecure_port(f"unix:{path}")

    async def set_serving(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", *self._service_names):
            await self.health.set(name, status)

    async def run_until_stopped(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("%s stopping: NOT_SERVING, draining for up to %.0f s", self.component, GRACE_S)
        await self.set_serving(False)
        await self.server.stop(GRACE_S)
