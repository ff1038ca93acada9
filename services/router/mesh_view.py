"""GET /mesh/services behind the router: every service the mesh knows, with its providers."""

from __future__ import annotations

import time

import grpc

from services.common import grpcclient
from services.common.models import CATALOG
from services.common.rpc import dht_pb2, router_pb2

# What a local provider shows instead of its upstream: anyone who can reach /mesh/services
# would otherwise read this node's backend socket paths and loopback URLs (issue 12, L5).
LOCAL_URL = "local"


async def known_services(router) -> list[str]:
    """Local, cached, and those with records on our dht node (all of them in a mesh ≤ k);
    the model catalog's key is no service (/v1/models shows it)."""
    names = [s.name for s in router.cfg.services] + list(router.cache.entries)
    try:
        stored = await router.dht.ListServices(dht_pb2.ListServicesRequest(), timeout=grpcclient.DEADLINE_S)
        names += list(stored.services)
    except grpc.aio.AioRpcError:
        pass
    return sorted(set(names) - {CATALOG})


async def remote_views(router, service: str, now: float) -> list[router_pb2.ProviderView]:
    providers = router.cache.get(service, now)
    if providers is None:  # a look, not a route: it does not count in the routing statistics
        try:
            providers = await router.lookup(service)
        except grpc.aio.AioRpcError:
            providers = []
    return [router_pb2.ProviderView(worker_id=p.worker_id, url=p.url, healthy=True, model=p.model,
                                    gpu_model=p.gpu_model, record_age_seconds=max(0.0, now - p.issued_at))
            for p in providers]


async def mesh_services(router) -> router_pb2.MeshServicesResponse:
    now = time.time()
    views = []
    for name in await known_services(router):
        providers = await remote_views(router, name, now)
        svc = router.cfg.service(name)
        if svc is not None:
            providers.insert(0, router_pb2.ProviderView(
                worker_id=router.cfg.worker_id, url=LOCAL_URL, local=True,
                model=router.backends[name].model,
                healthy=router.health[name].healthy))
        views.append(router_pb2.ServiceView(name=name, providers=providers))
    return router_pb2.MeshServicesResponse(services=views)
