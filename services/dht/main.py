"""The dht process: a Kademlia node behind the gRPC Dht service."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.common.config import Config
from services.common.grpcserver import ComponentServer
from services.common.rpc import dht_pb2, dht_pb2_grpc
from services.dht.node import DhtNode

log = logging.getLogger(__name__)


def _record_pb(record: dict) -> dht_pb2.ProviderRecord:
    return dht_pb2.ProviderRecord(**record)


class DhtServicer(dht_pb2_grpc.DhtServicer):
    def __init__(self, node: DhtNode, registry: CollectorRegistry):
        self.node = node
        self.registry = registry
        self.announces = Counter("meshworker_dht_announces", "Announce calls served", registry=registry)
        self.lookups = Counter("meshworker_dht_lookups", "FindProviders calls served", registry=registry)
        Gauge("meshworker_dht_known_peers", "Kademlia peers in the routing table",
              registry=registry).set_function(lambda: len(node.peers()))
        Gauge("meshworker_dht_stored_records", "Live provider records stored on this node",
              registry=registry).set_function(node.storage.record_count)

    async def Announce(self, request, context):
        record, stored = await self.node.announce(request.service, request.ttl_seconds)
        self.announces.inc()
        return dht_pb2.AnnounceResponse(record=_record_pb(record), stored_on=stored)

    async def Withdraw(self, request, context):
        return dht_pb2.WithdrawResponse(removed=await self.node.withdraw(request.service))

    async def FindProviders(self, request, context):
        self.lookups.inc()
        found = await self.node.find_providers(request.service)
        return dht_pb2.FindProvidersResponse(providers=[_record_pb(r) for r in found])

    async def ListPeers(self, request, context):
        return dht_pb2.ListPeersResponse(peers=[
            dht_pb2.Peer(node_id=n.id.hex(), address=f"{n.ip}:{n.port}") for n in self.node.peers()])

    async def Stats(self, request, context):
        return dht_pb2.DhtStatsResponse(
            known_peers=len(self.node.peers()), stored_records=self.node.storage.record_count(),
            announces=int(self.registry.get_sample_value("meshworker_dht_announces_total")),
            lookups=int(self.registry.get_sample_value("meshworker_dht_lookups_total")),
            port=self.node.port)


def gateway_url(cfg: Config) -> str:
    """How peers reach this node's gateway; the overlay address replaces this later."""
    return cfg.advertise_url or f"http://{cfg.worker_id}:{cfg.gateway_port}"


async def serve(cfg: Config) -> None:
    registry = CollectorRegistry()
    node = DhtNode(cfg.worker_id, gateway_url(cfg), cfg.announce_ttl_s)
    server = ComponentServer(cfg, "dht", registry)
    server.add(dht_pb2_grpc.add_DhtServicer_to_server, DhtServicer(node, registry),
               dht_pb2.DESCRIPTOR.services_by_name["Dht"].full_name)
    await server.start()
    await node.start(cfg.dht_host, cfg.dht_port, list(cfg.dht_seeds))
    await server.set_serving(True)
    try:
        await server.run_until_stopped()
    finally:
        node.stop()
