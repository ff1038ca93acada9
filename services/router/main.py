"""The router process: the Router service (servicer.py) with Envoy's ADS and access log on
one gRPC server, the announcer, and the loops that keep the node's view current."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine

from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2, ads_pb2_grpc
from prometheus_client import CollectorRegistry

from services.common import grpcclient
from services.common.config import Config
from services.common.grpcserver import ComponentServer
from services.common.keys import KEYS
from services.common.rpc import dht_pb2_grpc, router_pb2, router_pb2_grpc
from services.router import gateway_watch
from services.router.announcer import Announcer
from services.router.checker import check_forever
from services.router.families import hardware
from services.router.servicer import RouterServicer
from services.router.usage import AccessLog

log = logging.getLogger(__name__)


def log_client_auth(cfg: Config) -> None:
    if cfg.client_auth == "open":
        log.warning("client_auth = \"open\": anyone who reaches port %d may use every service and model "
                    "of the mesh, with no key and no limit", cfg.gateway_port)
    else:
        log.info("client_auth = \"keys\": /v1 and /service on port %d need an API key of the mesh%s",
                 cfg.gateway_port, ", except from loopback" if cfg.client_auth_loopback else "")


def loops(cfg: Config, servicer: RouterServicer, announcer: Announcer) -> list[Coroutine]:
    """What keeps the node's view current while the server runs."""
    def on_health_change(service: str, healthy: bool) -> None:
        announcer.set_health(service, healthy)
        servicer.changed.set()

    return [announcer.run(), servicer.refresh_forever(), servicer.watch_node(), servicer.publish_forever(),
            servicer.catalog_forever(), servicer.keys.read_forever(servicer.dht, cfg.worker_id, servicer.changed.set),
            servicer.keys.limits_forever(servicer.changed.set, lambda: announcer.changed(KEYS)),
            servicer.families.gpus_forever(), gateway_watch.follow(cfg, servicer.ads, servicer.on_ports)] + [
        check_forever(svc, servicer.health[svc.name], servicer.backends[svc.name], cfg.health_interval_s,
                      on_health_change, servicer.on_offer)
        for svc in cfg.services]


async def serve(cfg: Config) -> None:
    registry = CollectorRegistry()
    dht = grpcclient.channel(cfg, "dht")
    announcer = Announcer(dht, cfg.announce_ttl_s, {s.name: s.idempotent for s in cfg.services},
                          model_of=lambda service: servicer.backends[service].model,
                          catalog_of=lambda: servicer.catalog_entries(), url_of=lambda: servicer.url(),
                          key_record_of=lambda: servicer.keys.record(),
                          hardware_of=lambda: hardware(servicer.families.gpus))
    servicer = RouterServicer(cfg, registry, dht_pb2_grpc.DhtStub(dht), announcer)
    server = ComponentServer(cfg, "router", registry)
    server.add(router_pb2_grpc.add_RouterServicer_to_server, servicer,
               router_pb2.DESCRIPTOR.services_by_name["Router"].full_name)
    server.add(ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server, servicer.ads,
               ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"].full_name)
    server.add(als_pb2_grpc.add_AccessLogServiceServicer_to_server, AccessLog(servicer.keys.usage),
               als_pb2.DESCRIPTOR.services_by_name["AccessLogService"].full_name)

    log_client_auth(cfg)
    await server.start()
    try:
        async with asyncio.TaskGroup() as tasks:
            background = [tasks.create_task(loop) for loop in loops(cfg, servicer, announcer)]
            await server.set_serving(True)
            await server.run_until_stopped()
            for task in background:
                task.cancel()
    finally:
        await dht.close()

