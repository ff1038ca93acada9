"""The Router gRPC service: the node's brain and Envoy's control plane.

It knows the local services and their health, caches remote providers found in the
DHT, and turns all of that into Envoy's configuration (services/router/xds), served over
ADS. Envoy makes every per-request decision from that configuration: no request waits on
the router unless its service was never seen before (Resolve).
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from prometheus_client import CollectorRegistry, Counter

from services.common import grpcclient, keys
from services.common.config import Config
from services.common.keys import KEYS
from services.common.models import CATALOG, Model, Offer
from services.common.ratelimit import RateLimiter
from services.common.rpc import dht_pb2, dht_pb2_grpc, router_pb2, router_pb2_grpc
from services.common.statefile import StateError
from services.identity.trust import OverlayTrust
from services.router import address, cache_file, catalog, trust
from services.router.ads import AdsServer, Applied
from services.router.announcer import Announcer
from services.router.checker import BackendInfo
from services.router.dns import addressed
from services.router.families import register_gauges
from services.router.health import HealthDamper
from services.router.keybook import KeyBookError
from services.router.mesh_keys import MeshKeys
from services.router.mesh_view import mesh_services
from services.router.providers import Provider
from services.router.stats import RouterCounters
from services.router.xds import clusters, resources
from services.router.xds.view import LocalService, MeshView, ModelRoute, Peer, RemoteService

log = logging.getLogger(__name__)
REFRESH_TICK_S = 1.0
APPLY_DEADLINE_S = 2.0  # how long a first request waits for Envoy to take its new route
# How soon a join, a renewal, a revocation list or a new URL (a join, the port Envoy bound,
# where the DHT peers see this node) takes effect: a few small files and one local call.
NODE_CHECK_S = 2.0
# How often the mesh's model catalog is read: a model announced anywhere (or a provider's
# new load) is routed here within this, well inside one announce period.
CATALOG_REFRESH_S = 5.0
# A name no cache holds costs a DHT lookup (up to 1.5 s of crawling, dozens of datagrams):
# a client that starts using a mesh asks for a few services at once, a flood of random
# names for thousands (issue 12 L3). Per client address, as Envoy saw it.
LOOKUPS_PER_CLIENT_PER_S = 2.0
LOOKUP_BURST = 10.0


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(self, cfg: Config, registry: CollectorRegistry, dht: dht_pb2_grpc.DhtStub,
                 announcer: Announcer | None = None):
        self.cfg = cfg
        self.dht = dht
        self.announcer = announcer
        self.health = {s.name: HealthDamper(cfg.health_fail_threshold, cfg.health_ok_threshold)
                       for s in cfg.services}
        self.backends = {s.name: BackendInfo() for s in cfg.services}
        self.counters = RouterCounters()
        self.cache_path = cfg.runtime_dir / cache_file.NAME
        self.cache, self.version = cache_file.load(self.cache_path, time.time())
        self.version += 1
        self.tls = trust.current(cfg, None, time.time())
        self.overlay = OverlayTrust(cfg.state_dir)  # its view names this node's overlay address
        self.overlay.refresh()
        self.observed = ""  # where the DHT peers see this node (the dht's Stats)
        self.catalog: list[Provider] = []  # peers' catalog records: the models they serve
        self.keys = MeshKeys(cfg.state_dir, registry)
        self._reading_catalog: asyncio.Task | None = None
        self.bound_peer_port = cfg.peer_port  # the real one once Envoy bound it (cfg may say 0)
        self.pushes = Counter("meshworker_router_config_pushes", "Configurations the router made for Envoy",
                              registry=registry)
        rejections = Counter("meshworker_router_config_rejections", "Configurations Envoy refused (NACK); "
                             "it keeps its last good one", registry=registry)
        self.ads = AdsServer(resources.build(self.view(time.time()), self.version), on_nack=rejections.inc)
        self.changed = asyncio.Event()  # set when the view changed outside a request
        self._publishing = asyncio.Lock()  # one push at a time: a bridge step must not interleave
        self._looking_up: dict[str, asyncio.Task] = {}
        self.lookup_limit = RateLimiter(LOOKUPS_PER_CLIENT_PER_S, LOOKUP_BURST)
        self.lookups_refused = Counter("meshworker_router_lookups_refused", "Requests for a name no cache "
                                       "holds refused (429): their client started too many lookups",
                                       registry=registry)
        self.families = register_gauges(self, registry)

    def view(self, now: float) -> MeshView:
        cfg = self.cfg
        remote = []
        for name, entry in sorted(self.cache.entries.items()):
            live = [p for p in entry.providers if p.expires_at > now]
            peers = tuple(peer for p in live if (peer := Peer.from_url(p.worker_id, p.url)) is not None)
            if peers:
                remote.append(RemoteService(name, peers, all(p.idempotent for p in live)))
        return MeshView(
            worker_id=cfg.worker_id, listen_host=cfg.gateway_host, client_port=cfg.gateway_port,
            peer_port=cfg.peer_port, api_socket=str(cfg.api_socket), max_body_bytes=cfg.max_body_bytes,
            health_interval_s=cfg.health_interval_s, health_fail_threshold=cfg.health_fail_threshold,
            health_ok_threshold=cfg.health_ok_threshold,
            local=tuple(LocalService(s, self.health[s.name].healthy) for s in cfg.services),
            remote=tuple(remote), tls=self.tls,
            models=self.model_routes(now), aliases=cfg.aliases, keys=self.keys.in_force(now),
            client_auth=cfg.client_auth, loopback_exempt=cfg.client_auth_loopback, blocked=self.keys.blocked(now),
            overlay_address=self.overlay.view.address)

    def local_offers(self, healthy: bool = True) -> list[Offer]:
        """The models of this node's healthy backends (of its failing ones: healthy=False),
        with their load."""
        return [Offer(model, self.cfg.worker_id, s.name, self.backends[s.name].load_percent)
                for s in self.cfg.services if self.health[s.name].healthy == healthy
                for model in self.backends[s.name].models]

    def catalog_entries(self) -> list[dht_pb2.Model]:
        return [dht_pb2.Model(id=o.model.id, kind=o.model.kind, context_length=o.model.context_length,
                              service=o.service, load_percent=o.load_percent) for o in self.local_offers()]

    def model_routes(self, now: float) -> tuple[ModelRoute, ...]:
        remote = catalog.remote_offers(p for p in self.catalog if p.expires_at > now) if self.tls else []
        host = self.cfg.gateway_host if self.cfg.gateway_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        own = Peer(self.cfg.worker_id, host, self.bound_peer_port) if self.tls and self.bound_peer_port else None
        return catalog.model_routes(self.local_offers(), remote, own, down=self.local_offers(healthy=False))

    def on_offer(self, service: str) -> None:
        """A local backend's models or load changed: new weights here, a new catalog record."""
        self.changed.set()
        if self.announcer is not None:
            self.announcer.changed(CATALOG)

    def url(self) -> str | None:
        """Where peers reach this node: what every record of it says (address.py)."""
        return address.advertised_url(self.cfg, self.overlay.view.address, self.bound_peer_port, self.observed)

    async def watch_node(self) -> None:
        """What this node is to its peers: its overlay address and TLS credentials, which Envoy
        takes at once, and the URL every record says, stored again when it changes."""
        announced = self.url()
        while True:
            await asyncio.sleep(NODE_CHECK_S)
            await self.check_credentials()
            try:
                stats = await self.dht.Stats(dht_pb2.DhtStatsRequest(), timeout=grpcclient.HEALTH_DEADLINE_S)
                self.observed = stats.observed_address
            except grpc.aio.AioRpcError:
                pass
            if (url := self.url()) != announced:
                log.info("peers reach this node at %s", url)
                announced = url
                if url is not None and self.announcer is not None:
                    self.announcer.republish()

    def on_ports(self, client: int, peer: int) -> None:
        if peer != self.bound_peer_port:
            self.bound_peer_port = peer
            self.changed.set()

    async def publish(self) -> int:
        """Hand Envoy a new configuration; its version. Clusters it drops go one step
        after the routes that named them, once Envoy has taken those routes."""
        async with self._publishing:
            snapshot = self.next_snapshot()
            if snapshot.drops_clusters_of(self.ads.snapshot) and self.ads.applied.connected:
                await self.ads.publish(snapshot.keeping_clusters_of(self.ads.snapshot))
                await self.ads.wait_until(lambda a: a.holds(snapshot.version, resources.ROUTE), APPLY_DEADLINE_S)
                snapshot = self.next_snapshot()
            await self.ads.publish(snapshot)
            cache_file.save(self.cache_path, self.cache, self.version)
            return self.version

    def next_snapshot(self) -> resources.Snapshot:
        self.version += 1
        self.pushes.inc()
        return resources.build(self.view(time.time()), self.version)

    async def publish_forever(self) -> None:
        """Health changes arrive in bursts (a backend restarting): one push for each burst."""
        while True:
            await self.changed.wait()
            self.changed.clear()
            await self.publish()

    async def lookup(self, service: str) -> list[Provider]:
        reply = await self.dht.FindProviders(dht_pb2.FindProvidersRequest(service=service),
                                             timeout=grpcclient.DEADLINE_S)
        found = [Provider(r.worker_id, r.url, r.issued_at, r.expires_at, r.idempotent, r.gpu_model, r.model,
                          offers=tuple(Offer(Model(m.id, m.kind, m.context_length), r.worker_id, m.service,
                                             m.load_percent) for m in r.models))
                 for r in reply.providers if r.worker_id != self.cfg.worker_id]
        return [p for p in await asyncio.gather(*(addressed(p) for p in found)) if p is not None]

    def resolution(self, service: str, now: float) -> router_pb2.Resolution:
        svc = self.cfg.service(service)
        if svc is not None and self.health[service].healthy:
            return router_pb2.Resolution(service=service, kind=router_pb2.ROUTE_KIND_LOCAL, healthy=True)
        if self.cache.get(service, now):
            return router_pb2.Resolution(service=service, kind=router_pb2.ROUTE_KIND_FORWARDED, healthy=True)
        kind = router_pb2.ROUTE_KIND_LOCAL if svc is not None else router_pb2.ROUTE_KIND_NONE
        return router_pb2.Resolution(service=service, kind=kind)

    async def Resolve(self, request, context):
        """A request for a service Envoy has no route for: look it up once (the seed's
        cache miss and DHT lookup), push the route, and answer when Envoy holds it. A
        client may start only so many lookups (RESOURCE_EXHAUSTED past that)."""
        service, now = request.service, time.time()
        known = self.resolution(service, now)
        if known.healthy or self.cache.get(service, now) is not None:
            return known
        if service not in self._looking_up:  # first requests that arrive together share one lookup
            if self.lookup_limit.wait(request.client):
                self.lookups_refused.inc()
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"client {request.client or '(unknown)'} started too many lookups")
            self._looking_up[service] = asyncio.create_task(self.look_up(service))
            self._looking_up[service].add_done_callback(lambda _: self._looking_up.pop(service, None))
        try:
            await asyncio.shield(self._looking_up[service])  # a caller that goes away leaves it running
        except grpc.aio.AioRpcError as err:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the DHT is not answering: {err.code().name}")
        return self.resolution(service, time.time())

    async def look_up(self, service: str) -> None:
        """The seed's cache miss and DHT lookup; returns once Envoy holds the outcome. A
        name found nowhere changes no route (unless its providers were routed until now),
        so it costs Envoy nothing: the router alone remembers it (providers.py)."""
        self.counters.cache_misses += 1
        self.counters.dht_lookups += 1
        providers = await self.lookup(service)
        routed = service in self.cache.entries  # its providers' records expired meanwhile
        self.cache.put(service, providers, time.time())
        self.counters.misses_found += bool(providers)
        if self.cache.get(service, time.time()) or routed:
            await self.applied(await self.publish(), service)

    async def applied(self, version: int, service: str) -> bool:
        """Wait until Envoy took the routes of `version` and the endpoints of `service`."""
        def holds(applied: Applied) -> bool:
            return applied.holds(version, resources.ROUTE) and applied.holds(version, resources.CLUSTER) and (
                not self.cache.get(service, time.time())
                or applied.holds(version, resources.ENDPOINT, clusters.remote_name(service)))
        return await self.ads.wait_until(holds, APPLY_DEADLINE_S)

    async def read_catalog(self) -> None:
        """The mesh's model catalog, read again (callers at one time share one read); a
        change is pushed to Envoy, and this returns once Envoy holds it."""
        if self._reading_catalog is None:
            self._reading_catalog = asyncio.create_task(self._read_catalog())
            self._reading_catalog.add_done_callback(lambda _: setattr(self, "_reading_catalog", None))
        await asyncio.shield(self._reading_catalog)

    async def _read_catalog(self) -> None:
        found = await self.lookup(CATALOG)
        if found != self.catalog:
            self.catalog = found
            version = await self.publish()
            await self.ads.wait_until(lambda a: a.holds(version, resources.ROUTE) and a.holds(
                version, resources.CLUSTER), APPLY_DEADLINE_S)

    async def catalog_forever(self) -> None:
        while True:
            try:
                await self.read_catalog()
            except grpc.aio.AioRpcError as err:
                log.warning("could not read the model catalog: the DHT answered %s", err.code().name)
            await asyncio.sleep(catalog.next_read_in(self.catalog, time.time(), CATALOG_REFRESH_S))

    async def keys_changed(self) -> None:
        """This node made or revoked a key: Envoy here holds it before the caller hears
        back, and the node's key record is stored again."""
        version = await self.publish()
        await self.ads.wait_until(lambda a: a.holds(version, resources.LISTENER), APPLY_DEADLINE_S)
        if self.announcer is not None:
            self.announcer.changed(KEYS)

    async def CreateKey(self, request, context):
        try:
            key, token = self.keys.book.create(request.name, time.time(), request.requests_per_minute,
                                             request.tokens_per_minute, tuple(request.models), request.ttl_seconds)
        except ValueError as err:  # KeyBookError, or a name that is not one
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        log.info("made API key %s (%s)", key.name, key.id)
        await self.keys_changed()
        return router_pb2.CreatedKey(key=keys.to_pb(key), token=token)

    async def ListKeys(self, request, context):
        return self.keys.listed(time.time())

    async def RevokeKey(self, request, context):
        try:
            gone = self.keys.book.revoke(request.name, time.time())
        except KeyBookError as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(err))
        log.info("revoked API key %s (%s)", request.name, ", ".join(k.id for k in gone))
        await self.keys_changed()
        return router_pb2.KeyList(keys=[keys.to_pb(k) for k in gone])

    async def MeshModels(self, request, context):
        view = self.view(time.time())
        return router_pb2.MeshModelsResponse(models=[router_pb2.MeshModel(
            id=r.model.id, kind=r.model.kind, context_length=r.model.context_length,
            aliases=[alias for alias, target in view.aliases if target == r.model.id],
            providers=catalog.providers_of(r, self.cfg.worker_id)) for r in view.models])

    async def ResolveModel(self, request, context):
        """A name Envoy has no route for: the catalog read again, once for callers at one time."""
        def known(view: MeshView) -> bool:
            ids = {r.model.id for r in view.models}
            return request.model in ids or dict(view.aliases).get(request.model) in ids
        if not known(self.view(time.time())):
            try:
                await self.read_catalog()
            except grpc.aio.AioRpcError as err:
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"the DHT is not answering: {err.code().name}")
        return router_pb2.ModelResolution(found=known(self.view(time.time())))

    async def ListLocalServices(self, request, context):
        return router_pb2.ListLocalServicesResponse(services=[
            router_pb2.LocalService(name=s.name, upstream=s.upstream, health_path=s.health_path,
                                    healthy=self.health[s.name].healthy,
                                    last_error=self.health[s.name].last_error,
                                    model=self.backends[s.name].model,
                                    load_seconds=self.backends[s.name].load_seconds,
                                    rss_bytes=self.backends[s.name].rss_bytes)
            for s in self.cfg.services])

    async def Stats(self, request, context):
        return self.counters.as_proto(cache_size=len(self.cache))

    async def MeshServices(self, request, context):
        return await mesh_services(self)

    async def Gateway(self, request, context):
        applied = self.ads.applied
        return router_pb2.GatewayStatus(connected=applied.connected, version=self.version,
                                        acked_version=applied.version(), last_nack=applied.last_nack)

    async def Drain(self, request, context):
        try:
            withdrawn = await self.announcer.drain()
        except ConnectionError as err:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
        log.info("drained: withdrew %s", withdrawn)
        return router_pb2.DrainResponse(withdrawn=withdrawn)

    async def refresh_forever(self) -> None:
        """Keep cached routes ahead of their records' expiry, off the request path, and drop
        a provider from Envoy's endpoints the moment its record expires. Lookups run beside
        the loop: one that waits on a dead peer must not hold back the drop of that peer's
        expired record."""
        refreshing: dict[str, asyncio.Task] = {}
        try:
            while True:
                await asyncio.sleep(min(REFRESH_TICK_S, max(0.0, self.cache.next_expiry() - time.time())))
                now = time.time()
                if self.cache.prune(now):
                    await self.publish()
                for service in self.cache.due_for_refresh(now):
                    if service not in refreshing:
                        refreshing[service] = asyncio.create_task(self.refresh(service))
                        refreshing[service].add_done_callback(lambda _, s=service: refreshing.pop(s))
        finally:
            for task in list(refreshing.values()):
                task.cancel()
            await asyncio.gather(*refreshing.values(), return_exceptions=True)

    async def refresh(self, service: str) -> None:
        try:
            providers = await self.lookup(service)
        except grpc.aio.AioRpcError:
            return
        self.cache.put(service, providers, time.time())
        await self.publish()

    async def check_credentials(self) -> None:
        """A fresh certificate before the old one runs out, and a joined overlay's (its
        certificate, its new revocation list, this node's address in it) once on disk."""
        address = self.overlay.view.address
        await asyncio.to_thread(self.overlay.refresh)
        if self.overlay.view.address != address:
            self.changed.set()
        try:
            fresh = await asyncio.to_thread(trust.current, self.cfg, self.tls, time.time())
        except StateError as err:  # a record or CRL that cannot be used: keep what Envoy has
            log.error("keeping the TLS credentials Envoy holds: %s", err)
            return
        if fresh != self.tls:
            self.tls = fresh
            self.changed.set()
