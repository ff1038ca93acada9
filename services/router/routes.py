"""The route table the router pushes to the gateway: pure, from config and health."""

from __future__ import annotations

from collections.abc import Mapping

from services.common.config import ServiceConfig
from services.common.rpc import router_pb2
from services.router.health import HealthDamper


def local_route(worker_id: str, svc: ServiceConfig, healthy: bool) -> router_pb2.Route:
    return router_pb2.Route(
        service=svc.name, kind=router_pb2.ROUTE_KIND_LOCAL, upstream=svc.upstream,
        invoke_path=svc.invoke_path, healthy=healthy, idempotent=svc.idempotent,
        timeout_seconds=svc.timeout_s, worker_id=worker_id)


def route_table(version: int, worker_id: str, services: tuple[ServiceConfig, ...],
                health: Mapping[str, HealthDamper]) -> router_pb2.RouteTable:
    return router_pb2.RouteTable(version=version, routes=[
        local_route(worker_id, svc, health[svc.name].healthy) for svc in services])
