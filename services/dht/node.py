"""The Kademlia node of one meshworker: announce, withdraw and find provider records."""

from __future__ import annotations

import asyncio
import logging
import time

from kademlia.crawling import NodeSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node
from kademlia.utils import digest

from services.dht import records
from services.dht.storage import ProviderStorage

log = logging.getLogger(__name__)


class DhtNode:
    def __init__(self, worker_id: str, url: str, ttl_s: float):
        self.worker_id = worker_id
        self.url = url
        self.ttl_s = ttl_s
        self.storage = ProviderStorage()
        self.server = Server(storage=self.storage)
        self.port = 0
        self._announced: dict[str, records.Record] = {}

    async def start(self, host: str, port: int, seeds: list[tuple[str, int]]) -> None:
        await self.server.listen(port, host)
        self.port = self.server.transport.get_extra_info("sockname")[1]
        if seeds:
            found = await self.server.bootstrap(await _resolve(seeds))
            log.info("DHT bootstrapped from %s: %d peers answered", seeds, len(found))
        else:
            log.info("DHT listening on UDP %d as bootstrap node", self.port)

    def stop(self) -> None:
        self.server.stop()

    async def announce(self, service: str, ttl_s: float = 0) -> tuple[records.Record, int]:
        previous = self._announced.get(service, {}).get("sequence", 0)
        record = records.new_record(service, self.worker_id, self.url, ttl_s or self.ttl_s, time.time(),
                                    previous)
        self._announced[service] = record
        stored = await self._store(service, record)
        log.info("Published service: %s by %s (%s), stored on %d nodes",
                 service, self.worker_id, self.url, stored)
        return record, stored

    async def withdraw(self, service: str) -> bool:
        record = self._announced.pop(service, None)
        if record is None:
            return False
        await self._store(service, records.tombstone(record, time.time()))
        log.info("Withdrew service: %s", service)
        return True

    async def find_providers(self, service: str) -> list[records.Record]:
        """The union of the provider sets held here and on the k nodes closest to the key.

        kademlia's own get() stops at the first value (and prefers a local one), which
        would hide providers stored only elsewhere; a provider set must be merged.
        """
        dkey = digest(records.service_key(service))
        merged = records.decode(self.storage.get(dkey))
        for value in await self._values_near(dkey):
            merged = records.merge(merged, records.decode(value), time.time())
        merged = records.merge({}, merged, time.time())
        return sorted(merged.values(), key=lambda r: r["worker_id"])

    def peers(self) -> list[Node]:
        if self.server.protocol is None:  # not listening yet
            return []
        return [n for bucket in self.server.protocol.router.buckets for n in bucket.get_nodes()]

    async def _closest_nodes(self, dkey: bytes) -> list[Node]:
        target = Node(dkey)
        nearest = self.server.protocol.router.find_neighbors(target)
        if not nearest:
            return []
        spider = NodeSpiderCrawl(self.server.protocol, target, nearest, self.server.ksize, self.server.alpha)
        return await spider.find()

    async def _values_near(self, dkey: bytes) -> list[str]:
        nodes = await self._closest_nodes(dkey)
        replies = await asyncio.gather(*(self.server.protocol.call_find_value(n, Node(dkey)) for n in nodes))
        return [reply["value"] for ok, reply in replies if ok and isinstance(reply, dict) and "value" in reply]

    async def _store(self, service: str, record: records.Record) -> int:
        """Store on this node and on the k closest peers; returns how many accepted it."""
        dkey = digest(records.service_key(service))
        value = records.encode({self.worker_id: record})
        self.storage[dkey] = value
        nodes = await self._closest_nodes(dkey)
        replies = await asyncio.gather(*(self.server.protocol.call_store(n, dkey, value) for n in nodes))
        return 1 + sum(1 for ok, _ in replies if ok)


async def _resolve(seeds: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Kademlia wants IP addresses; seeds may be names (MESHWORKER_DHT_SEEDS=node-a:8468)."""
    loop = asyncio.get_running_loop()
    resolved = []
    for host, port in seeds:
        infos = await loop.getaddrinfo(host, port, type=2)  # SOCK_DGRAM
        resolved.append((infos[0][4][0], port))
    return resolved
