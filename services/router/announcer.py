"""Keeps the DHT's view of this node's services in step with their health.

Healthy services are announced, and re-announced at about half the record TTL (with
jitter, so nodes started together do not republish together); a service that turns
unhealthy is withdrawn at once. When the dht process comes back after a crash it has
lost its records, so a SERVING transition on its health stream triggers a full announce.

All services go to the dht at once: an announce crawls to and stores on the closest
peers, and each peer that is down costs it the dht's RPC timeout, so announcing one
after another could let the last records expire before they were republished.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.keys import KEYS
from services.common.models import CATALOG
from services.common.rpc import dht_pb2, dht_pb2_grpc

log = logging.getLogger(__name__)
RETRY_S = 1.0
# A busy backend's load changes with every request: a summary record is stored again at
# most this often (peers read the catalog as often: Router.catalog_forever).
SUMMARY_MIN_INTERVAL_S = 2.0
# A crawl and a store, each waiting up to the dht's 1 s RPC timeout for peers that are down.
ANNOUNCE_DEADLINE_S = 10.0


@dataclass
class Summary:
    """A record this node stores under a reserved name (@models, @keys): stored again when
    what it says changes (at most every SUMMARY_MIN_INTERVAL_S) and before it expires."""

    fields: Callable[[], dict[str, list]]  # AnnounceRequest fields now; all empty: withdraw it
    drained: bool  # whether a drained node withdraws it (its models: yes; the mesh's keys: no)
    stored: dict[str, list] | None = None  # as last stored; None: store it again
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Announcer:
    def __init__(self, channel: grpc.aio.Channel, ttl_s: int, idempotent: dict[str, bool],
                 model_of: Callable[[str], str], catalog_of: Callable[[], list[dht_pb2.Model]],
                 url_of: Callable[[], str | None], key_record_of: Callable[[], dict[str, list]] = dict,
                 hardware_of: Callable[[], dict[str, str | int]] = dict):
        self._channel = channel
        self._idempotent = idempotent
        self._model_of = model_of  # what the backend's health answer names, read at each announce
        # Where peers reach this node (address.py); None until Envoy bound its peer port: no
        # record is stored before (one must never say port 0). Every record says it.
        self._url_of = url_of
        self._hardware_of = hardware_of  # AnnounceRequest's gpu fields now: every record says them
        # This node's models (with their services and load), and the keys it made or revoked
        # with what limited keys used here this minute (AnnounceRequest's keys and usage), now.
        self.summaries = {CATALOG: Summary(lambda: {"models": catalog_of()}, drained=True),
                          KEYS: Summary(key_record_of, drained=False)}
        self._dht = dht_pb2_grpc.DhtStub(channel)
        self._ttl_s = ttl_s
        self._healthy: set[str] = set()
        self._withdrawn: set[str] = set()
        self._wake = asyncio.Event()
        self.draining = False

    async def drain(self) -> list[str]:
        """Withdraw every service now and announce none from here on."""
        self.draining = True
        withdrawn = sorted(self._healthy)
        self._withdrawn |= self._healthy
        self._healthy.clear()
        if not await self._sync() or not await self._sync_summary(CATALOG):
            raise ConnectionError("the DHT is not answering")
        return withdrawn

    def republish(self) -> None:
        """Store every record again now (what they all say changed: this node's URL or GPUs)."""
        self._wake.set()
        for summary in self.summaries.values():
            summary.stored = None
            summary.wake.set()

    def changed(self, name: str) -> None:
        """What a summary record says may have changed (a backend's models or load, a key)."""
        self.summaries[name].wake.set()

    def set_health(self, service: str, healthy: bool) -> None:
        if healthy and not self.draining:
            self._healthy.add(service)
            self._withdrawn.discard(service)
        else:
            self._healthy.discard(service)
            self._withdrawn.add(service)
        self._wake.set()
        self.changed(CATALOG)  # the catalog lists the models of healthy backends only

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._watch_dht())
            tasks.create_task(self._sync_forever())
            for name in self.summaries:
                tasks.create_task(self._summary_forever(name))

    async def _sync_forever(self) -> None:
        delay = self._republish_delay()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass
            self._wake.clear()
            delay = self._republish_delay() if await self._sync() else RETRY_S

    async def _sync(self) -> bool:
        url = self._url_of()
        withdrawn, healthy = sorted(self._withdrawn), sorted(self._healthy) if url else []
        results = await asyncio.gather(*(self._withdraw(s) for s in withdrawn),
                                       *(self._announce(s, url) for s in healthy), return_exceptions=True)
        for service, result in zip(withdrawn, results, strict=False):
            if result is None:
                self._withdrawn.discard(service)
        failures = [r for r in results if r is not None]
        for failure in failures:
            if not isinstance(failure, grpc.aio.AioRpcError):
                raise failure
        if failures:
            log.warning("DHT not reachable (%s); retrying in %.0f s", failures[0].code().name, RETRY_S)
        return not failures and (url is not None or not self._healthy)

    async def _summary_forever(self, name: str) -> None:
        summary = self.summaries[name]
        while True:
            try:
                await asyncio.wait_for(summary.wake.wait(), timeout=self._republish_delay())
            except TimeoutError:
                summary.stored = None
            summary.wake.clear()
            if not await self._sync_summary(name):
                log.warning("the %s record is not stored yet (the DHT did not answer, or Envoy has not bound "
                            "the peer port); retrying in %.0f s", name, RETRY_S)
                await asyncio.sleep(RETRY_S)
                summary.wake.set()
                continue
            await asyncio.sleep(SUMMARY_MIN_INTERVAL_S)

    async def _sync_summary(self, name: str) -> bool:
        summary = self.summaries[name]
        fields = {k: [] for k in summary.fields()} if self.draining and summary.drained else summary.fields()
        if fields == summary.stored:
            return True
        url = self._url_of()
        if any(fields.values()) and url is None:
            return False
        try:
            if any(fields.values()):
                await self._dht.Announce(dht_pb2.AnnounceRequest(service=name, ttl_seconds=self._ttl_s, url=url,
                                                                 **fields, **self._hardware_of()),
                                         timeout=ANNOUNCE_DEADLINE_S)
            else:
                await self._withdraw(name)
        except grpc.aio.AioRpcError:
            return False
        summary.stored = fields
        return True

    async def _withdraw(self, service: str) -> None:
        await self._dht.Withdraw(dht_pb2.WithdrawRequest(service=service), timeout=ANNOUNCE_DEADLINE_S)

    async def _announce(self, service: str, url: str) -> None:
        request = dht_pb2.AnnounceRequest(service=service, ttl_seconds=self._ttl_s, url=url,
                                          idempotent=self._idempotent.get(service, False),
                                          model=self._model_of(service), **self._hardware_of())
        await self._dht.Announce(request, timeout=ANNOUNCE_DEADLINE_S)

    async def _watch_dht(self) -> None:
        health = health_pb2_grpc.HealthStub(self._channel)
        while True:
            try:
                async for reply in health.Watch(health_pb2.HealthCheckRequest()):
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        self.republish()  # a restarted dht lost what it stored
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(RETRY_S)

    def _republish_delay(self) -> float:
        return self._ttl_s / 2 * random.uniform(0.8, 1.0)
