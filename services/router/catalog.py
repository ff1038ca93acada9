"""The mesh's models as routes: this node's offers and the catalog records of its peers.

Pure. An offer is one model served by one worker's service with that backend's load; a
model's route lists every provider with its peer listener, this node's own first,
once some peer serves the model too (xds/models.py decides what that becomes).
"""

from __future__ import annotations

from collections.abc import Iterable

from services.common.models import Offer
from services.common.rpc import router_pb2
from services.router.providers import Provider
from services.router.xds.view import ModelProvider, ModelRoute, Peer

MIN_READ_INTERVAL_S = 0.5


def next_read_in(records: Iterable[Provider], now: float, every_s: float) -> float:
    """Seconds until the catalog is read again: every `every_s`, and before half the life
    left of the first live record is gone, so a short announce TTL (its issuer republishes
    at about half of it) never leaves a model out between two reads."""
    left = [p.expires_at - now for p in records if p.expires_at > now]
    return max(MIN_READ_INTERVAL_S, min([every_s, *(t / 2 for t in left)]))


def remote_offers(catalog: Iterable[Provider]) -> list[tuple[Peer, Offer]]:
    """Each peer's offers with where to reach it; a record without a usable URL is skipped."""
    found = []
    for record in catalog:
        peer = Peer.from_url(record.worker_id, record.url)
        if peer is not None:
            found += [(peer, offer) for offer in record.offers]
    return found


def model_routes(local: list[Offer], remote: list[tuple[Peer, Offer]], own_listener: Peer | None,
                 down: list[Offer] = ()) -> tuple[ModelRoute, ...]:
    """One route per model id, sorted. `remote`: [] without TLS (no forwarding).
    `own_listener`: this node's peer listener, None before Envoy bound it (until then a
    model served here is served only here). `down`: the models of local backends failing
    their checks: a model only they serve keeps its route here, so a request gets 503 and
    Retry-After (its provider is down), not 404 (no such model)."""
    ids = sorted({o.model.id for o in [*local, *down]} | {o.model.id for _, o in remote})
    routes = []
    for model_id in ids:
        there = [(p, o) for p, o in remote if o.model.id == model_id]
        here = next((o for o in local if o.model.id == model_id), None) or (
            None if there else next(o for o in down if o.model.id == model_id))
        providers = [ModelProvider(p, o.service, o.load_percent) for p, o in there]
        if providers and here is not None:
            if own_listener is None:
                providers = []
            else:
                providers.insert(0, ModelProvider(own_listener, here.service, here.load_percent, local=True))
        model = here.model if here is not None else there[0][1].model
        routes.append(ModelRoute(model, here.service if here else None, tuple(providers)))
    return tuple(routes)


def providers_of(route: ModelRoute, worker_id: str) -> list[router_pb2.ModelProvider]:
    """What MeshModels shows of a model's providers (a model served only here has none in
    its route: it is this node's)."""
    if not route.providers:
        return [router_pb2.ModelProvider(worker_id=worker_id, service=route.local_service or "", local=True)]
    return [router_pb2.ModelProvider(worker_id=p.peer.worker_id, service=p.service, local=p.local,
                                     load_percent=p.load_percent) for p in route.providers]
