"""The dht process: a Kademlia node behind the gRPC Dht service."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily

from services.common import grpcclient, keys
from services.common.config import Config
from services.common.grpcserver import ComponentServer
from services.common.rpc import dht_pb2, dht_pb2_grpc, nebula_pb2, nebula_pb2_grpc
from services.dht import reach, state
from services.dht.node import DhtNode, Signer
from services.identity.node_key import NodeIdentity
from services.identity.trust import MeshTrust, mesh_trust

log = logging.getLogger(__name__)
PING_DEADLINE_S = 1.0
MAINTENANCE_INTERVAL_S = 10.0
OVERLAY_POLL_S = 2.0
ADDRESS_RECHECK_S = 30.0  # how often peers are asked again where they see this node, when they did not change


def record_pb(record: dict) -> dht_pb2.ProviderRecord:
    return dht_pb2.ProviderRecord(
        service=record["service"], worker_id=record["worker_id"], url=record["url"],
        issued_at=record["issued_at"], expires_at=record["expires_at"], sequence=record["sequence"],
        idempotent=record["idempotent"], model=record.get("model", ""), gpu_model=record["gpu_model"],
        gpu_free_bytes=record["gpu_free_bytes"], public_key=record["key"], models=[
            dht_pb2.Model(id=m[0], kind=m[1], context_length=m[2], service=m[3], load_percent=m[4])
            for m in record.get("models", [])], keys=[keys.entry_pb(k) for k in record.get("keys", [])],
        usage=[dht_pb2.KeyWindow(key=u[0], window=u[1], requests=u[2], tokens=u[3]) for u in record.get("usage", [])])


class CountCollector:
    """A counter kept by another object (prometheus_client's Counter wants to be incremented
    itself): meshworker_dht_unverified_records_total, records dropped as not authentic on
    arrival (services/dht/unverified.py; which peers sent them is in ListPeers, not in
    labels), meshworker_dht_rate_limited_requests_total and meshworker_dht_over_quota_records_total."""

    def __init__(self, name: str, documentation: str, read: Callable[[], int]):
        self.name, self.documentation, self.read = name, documentation, read

    def collect(self):
        yield CounterMetricFamily(self.name, self.documentation, value=self.read())


class DhtServicer(dht_pb2_grpc.DhtServicer):
    def __init__(self, node: DhtNode, registry: CollectorRegistry, overlay: Overlay):
        self.node = node
        self.registry = registry
        self.overlay = overlay
        self.announces = Counter("meshworker_dht_announces", "Announce calls served", registry=registry)
        self.lookups = Counter("meshworker_dht_lookups", "FindProviders calls served", registry=registry)
        Gauge("meshworker_dht_known_peers", "Kademlia peers in the routing table",
              registry=registry).set_function(lambda: len(node.peers()))
        Gauge("meshworker_dht_stored_records", "Live provider records stored on this node",
              registry=registry).set_function(node.storage.record_count)
        registry.register(CountCollector("meshworker_dht_unverified_records",
                                         "Records from peers that this node could not verify (another mesh's "
                                         "secret or CA, revoked, or forged)", lambda: node.unverified.total))
        registry.register(CountCollector("meshworker_dht_rate_limited_requests",
                                         "DHT requests dropped by the per-host rate limit", node.rate_limited))
        registry.register(CountCollector("meshworker_dht_over_quota_records",
                                         "Records refused because their signer already holds records under "
                                         "MAX_KEYS_PER_SIGNER keys on this node", lambda: node.storage.over_quota))
        Gauge("meshworker_dht_unverified_peers", "Peers that sent records this node could not verify",
              registry=registry).set_function(lambda: len(node.unverified.peers()))

    async def Announce(self, request, context):
        if not request.url:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a record needs the url peers reach this node at")
        record, stored = await self.node.announce(request.service, request.url, request.ttl_seconds,
                                                  idempotent=request.idempotent, model=request.model,
                                                  models=[(m.id, m.kind, m.context_length, m.service,
                                                           m.load_percent) for m in request.models],
                                                  keys=[keys.to_entry(k) for k in request.keys],
                                                  usage=[[u.key, u.window, u.requests, u.tokens]
                                                         for u in request.usage],
                                                  gpu_model=request.gpu_model, gpu_free_bytes=request.gpu_free_bytes)
        self.announces.inc()
        return dht_pb2.AnnounceResponse(record=record_pb(record), stored_on=stored)

    async def Withdraw(self, request, context):
        return dht_pb2.WithdrawResponse(removed=await self.node.withdraw(request.service))

    async def FindProviders(self, request, context):
        self.lookups.inc()
        found = await self.node.find_providers(request.service)
        return dht_pb2.FindProvidersResponse(providers=[record_pb(r) for r in found])

    async def ListPeers(self, request, context):
        peers = self.node.peers()
        rtts = await asyncio.gather(*(asyncio.wait_for(self.node.ping(p), PING_DEADLINE_S) for p in peers),
                                    return_exceptions=True)
        return dht_pb2.ListPeersResponse(peers=[
            dht_pb2.Peer(node_id=p.id.hex(), address=f"{p.ip}:{p.port}",
                         rtt_seconds=rtt if isinstance(rtt, float) else 0.0, reachable=isinstance(rtt, float))
            for p, rtt in zip(peers, rtts, strict=True)], unverified=[
            dht_pb2.UnverifiedPeer(address=u.address, worker_id=u.worker_id, records=min(u.records, 2**32 - 1),
                                   last_seen=u.last_seen) for u in self.node.unverified.peers()])

    async def ListServices(self, request, context):
        return dht_pb2.ListServicesResponse(services=self.node.services_stored())

    async def Stats(self, request, context):
        return dht_pb2.DhtStatsResponse(
            known_peers=len(self.node.peers()), stored_records=self.node.storage.record_count(),
            announces=int(self.registry.get_sample_value("meshworker_dht_announces_total")),
            lookups=int(self.registry.get_sample_value("meshworker_dht_lookups_total")),
            port=self.node.port, node_id=self.node.node_id.hex(), observed_address=self.overlay.observed)


@dataclass
class Overlay:
    """This node's overlay address and the lighthouses', as nebula-agent last reported them;
    and the address its DHT peers see it at (the router advertises it when it knows no
    better)."""

    ip: str = ""
    lighthouses: tuple[str, ...] = ()
    observed: str = ""


async def follow_overlay(cfg: Config, overlay: Overlay, node: DhtNode) -> None:
    """Keep the overlay view current: it can appear after a join, blink out while nebula
    restarts, or end on revoke. A join moves the DHT onto the overlay address. The address
    the peers see is asked again as the peers change."""
    watch = AddressWatch(node)
    trust = node.signer.trust
    host = listen_host(cfg, trust)  # where start_on_known_port bound it
    async with grpcclient.channel(cfg, "nebula-agent") as channel:
        agent = nebula_pb2_grpc.NebulaAgentStub(channel)
        while True:
            try:
                status = await agent.Status(nebula_pb2.StatusRequest(), timeout=grpcclient.HEALTH_DEADLINE_S)
            except grpc.aio.AioRpcError:
                status = None
            if status is not None:
                overlay.ip, overlay.lighthouses = status.overlay_ip, tuple(status.lighthouses)
            if (wanted := listen_host(cfg, trust)) != host:
                host = wanted
                await move(cfg, node, host, overlay)
            await watch.update(overlay, time.monotonic())
            await asyncio.sleep(OVERLAY_POLL_S)


def listen_host(cfg: Config, trust: MeshTrust) -> str:
    """In an overlay, the DHT listens on the overlay address alone (bound even while nebula's
    tun device is down): a host of the underlay that never joined reads and stores nothing."""
    if trust.overlay is not None and trust.overlay.joined() and trust.overlay.view.address:
        return trust.overlay.view.address
    return cfg.dht_host


async def move(cfg: Config, node: DhtNode, host: str, overlay: Overlay) -> None:
    """Rebind on the same port at the new address, then meet the overlay's lighthouses: the
    peers known until now were met on the underlay, which this node no longer hears."""
    log.info("overlay membership changed: the DHT moves from %s to %s", node.host, host)
    await node.listen(host, node.port)
    await node.bootstrap([(ip, cfg.dht_port) for ip in overlay.lighthouses if ip != overlay.ip])


class AddressWatch:
    """Asks the DHT peers where they see this node (services/dht/reach.py): whenever the
    set of peers changes, else every ADDRESS_RECHECK_S, or every poll while none answered."""

    def __init__(self, node: DhtNode):
        self.node = node
        self.peers: frozenset[tuple[str, int]] | None = None
        self.asked_at = 0.0

    async def update(self, overlay: Overlay, now: float) -> None:
        peers = frozenset((p.ip, p.port) for p in self.node.peers())
        wait = ADDRESS_RECHECK_S if overlay.observed else OVERLAY_POLL_S
        if not peers or (peers == self.peers and now - self.asked_at < wait):
            return
        self.peers, self.asked_at = peers, now
        answers = await self.node.observed_answers()
        chosen = reach.choose_observed(answers, overlay.observed)
        if chosen is not None and chosen != overlay.observed:
            log.info("DHT peers see this node at %s (%d of %d answers)", chosen,
                     sum(1 for peer, seen in answers if reach.usable(peer, seen) == chosen), len(answers))
            overlay.observed = chosen


async def start_on_known_port(cfg: Config, node: DhtNode, saved: state.DhtState,
                              seeds_: list[tuple[str, int]]) -> None:
    """With dht_port 0, a restart binds the port it had before: that is where the other
    nodes' routing tables (and seeds) point. A new one is taken if that is taken."""
    port = cfg.dht_port or saved.port
    host = listen_host(cfg, node.signer.trust)
    try:
        await node.start(host, port, seeds_)
    except OSError as err:
        if cfg.dht_port:
            raise
        log.warning("DHT port %d is taken (%s): binding a new one", port, err.strerror)
        await node.start(host, 0, seeds_)
    saved.port = node.port


def seeds(cfg: Config, overlay: Overlay, saved: state.DhtState) -> list[tuple[str, int]]:
    """Configured seeds, then the lighthouses' DHTs over the overlay, then old peers."""
    lighthouses = [(ip, cfg.dht_port) for ip in overlay.lighthouses if ip != overlay.ip]
    return list(dict.fromkeys([*cfg.dht_seeds, *lighthouses, *saved.peers]))


async def maintain(cfg: Config, node: DhtNode, saved: state.DhtState, overlay: Overlay) -> None:
    """Persist the known peers, and rejoin from seeds and old peers whenever alone: soon
    after start (nodes started together race their seeds), then less and less often."""
    delay = 1.0
    while True:
        await asyncio.sleep(delay)
        alone = not node.peers()
        if alone and seeds(cfg, overlay, saved):
            await node.bootstrap(seeds(cfg, overlay, saved))
        delay = min(delay * 2, MAINTENANCE_INTERVAL_S) if alone else MAINTENANCE_INTERVAL_S
        saved.peers = [(p.ip, p.port) for p in node.peers()] or saved.peers
        state.save(cfg.state_dir, saved)


async def serve(cfg: Config) -> None:
    registry = CollectorRegistry()
    saved = state.load(cfg.state_dir)
    signer = Signer(NodeIdentity.load_or_create(cfg.state_dir), mesh_trust(cfg))
    overlay = Overlay()
    node = DhtNode(cfg.worker_id, cfg.announce_ttl_s, signer, saved.node_id)
    server = ComponentServer(cfg, "dht", registry)
    server.add(dht_pb2_grpc.add_DhtServicer_to_server, DhtServicer(node, registry, overlay),
               dht_pb2.DESCRIPTOR.services_by_name["Dht"].full_name)
    await server.start()
    await start_on_known_port(cfg, node, saved, seeds(cfg, overlay, saved))
    state.save(cfg.state_dir, saved)
    await server.set_serving(True)
    try:
        async with asyncio.TaskGroup() as tasks:
            background = [tasks.create_task(maintain(cfg, node, saved, overlay)),
                          tasks.create_task(follow_overlay(cfg, overlay, node))]
            await server.run_until_stopped()
            for task in background:
                task.cancel()
    finally:
        saved.peers = [(p.ip, p.port) for p in node.peers()] or saved.peers
        state.save(cfg.state_dir, saved)
        node.stop()
