"""The routes the router pushes to the gateway: pure, from config, health and the cache."""

from __future__ import annotations

import random

from services.common.config import ServiceConfig
from services.common.rpc import router_pb2
from services.router.providers import Latencies, Provider, preference_order

# A peer answers within its own backend's timeout or says 504 itself; this bounds the wait
# for a peer that stopped answering altogether.
FORWARD_TIMEOUT_S = 300.0
# Services whose providers with a GPU are preferred while one is healthy.
GPU_SERVICES = frozenset({"llm-inference"})


def local_route(worker_id: str, svc: ServiceConfig, healthy: bool) -> router_pb2.Route:
    return router_pb2.Route(
        service=svc.name, kind=router_pb2.ROUTE_KIND_LOCAL, upstream=svc.upstream,
        invoke_path=svc.invoke_path, healthy=healthy, idempotent=svc.idempotent,
        timeout_seconds=svc.timeout_s, worker_id=worker_id)


def forwarded_route(service: str, providers: list[Provider], latencies: Latencies,
                    rng: random.Random, now: float = 0.0) -> router_pb2.Route:
    ordered = preference_order(providers, latencies, rng, prefer_gpu=service in GPU_SERVICES, now=now)
    return router_pb2.Route(
        service=service, kind=router_pb2.ROUTE_KIND_FORWARDED, healthy=True,
        idempotent=all(p.idempotent for p in ordered), timeout_seconds=FORWARD_TIMEOUT_S,
        worker_id=ordered[0].worker_id,
        endpoints=[router_pb2.Endpoint(worker_id=p.worker_id, url=p.url, expires_at=p.expires_at) for p in ordered])


def choose(service: str, local: tuple[ServiceConfig, bool] | None, remote: list[Provider] | None,
           worker_id: str, latencies: Latencies, rng: random.Random, now: float = 0.0) -> router_pb2.Route:
    """The local backend when it is healthy, else the remote providers, else the local
    backend even though unhealthy (503 beats 404 for a service this node hosts)."""
    if local is not None and local[1]:
        return local_route(worker_id, local[0], True)
    if remote:
        return forwarded_route(service, remote, latencies, rng, now)
    if local is not None:
        return local_route(worker_id, local[0], False)
    return router_pb2.Route(service=service, kind=router_pb2.ROUTE_KIND_NONE)
