"""The mesh's API keys as this router holds them: the keys in force (this node's keys.json
and the other members' key records, keybook.py), what each was used for here (usage.py), and
which are past a limit this minute across the mesh (limits.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry

from services.common import grpcclient, keys
from services.common.keys import KEYS, ApiKey
from services.common.rpc import dht_pb2, dht_pb2_grpc, router_pb2
from services.router import keybook, limits
from services.router.keybook import KeyBook
from services.router.usage import KeyUse, Usage

log = logging.getLogger(__name__)
# How often the other members' key records are read: a key made or revoked anywhere holds
# here within this and the 2 s its node may wait to store its record (10 s, the promise).
KEYS_REFRESH_S = 5.0
LIMITS_TICK_S = 0.5  # how soon a key past a limit is refused, and how soon a new minute frees it


class MeshKeys:
    def __init__(self, state_dir: Path, registry: CollectorRegistry):
        self.book = KeyBook(state_dir / keybook.FILE)
        self.usage = Usage()
        registry.register(self.usage)
        self.published: list[limits.Published] = []  # peers' use of limited keys, as their records say
        self.blocked_names: tuple[str, ...] = ()  # keys past a limit this minute, in Envoy's routes

    def in_force(self, now: float) -> tuple[ApiKey, ...]:
        return self.book.in_force(now)

    def minute_counts(self, now: float) -> dict[str, limits.Count]:
        window = limits.window_of(now)
        return limits.mesh_counts(self.usage.in_window(window), self.published, window)

    def blocked(self, now: float) -> tuple[tuple[str, int], ...]:
        return limits.blocked(self.book.in_force(now), self.minute_counts(now), now)

    def record(self) -> dict[str, list]:
        """This node's key record: the keys it made or revoked, and this minute's use of the
        limited ones here (peers add it to theirs)."""
        now = time.time()
        window = limits.window_of(now)
        limited = {k.name for k in self.book.in_force(now) if k.requests_per_minute or k.tokens_per_minute}
        return {"keys": [keys.to_pb(k) for k in self.book.own], "usage": [
            dht_pb2.KeyWindow(key=name, window=window, requests=count.requests, tokens=count.tokens)
            for name, count in sorted(self.usage.in_window(window).items()) if name in limited]}

    def listed(self, now: float) -> router_pb2.KeyList:
        """The keys in force, with this minute's mesh-wide use and this node's totals."""
        found, minute = self.book.in_force(now), self.minute_counts(now)
        return router_pb2.KeyList(keys=[keys.to_pb(k) for k in found], usage=[router_pb2.KeyUsage(
            name=k.name, minute_requests=minute.get(k.name, limits.Count()).requests,
            minute_tokens=minute.get(k.name, limits.Count()).tokens,
            **dataclasses.asdict(self.usage.by_key.get(k.name, KeyUse()))) for k in found])

    async def read_forever(self, dht: dht_pb2_grpc.DhtStub, worker_id: str, on_change: Callable[[], None]) -> None:
        """Other members' key records: a key they made or revoked, in force here or not."""
        while True:
            try:
                reply = await dht.FindProviders(dht_pb2.FindProvidersRequest(service=KEYS),
                                                timeout=grpcclient.DEADLINE_S)
                others = [r for r in reply.providers if r.worker_id != worker_id]
                self.published = [limits.Published(u.key, u.window, limits.Count(u.requests, u.tokens))
                                  for r in others for u in r.usage]
                if self.book.read([keys.from_pb(k) for r in others for k in r.keys]):
                    on_change()
            except grpc.aio.AioRpcError as err:
                log.warning("could not read the mesh's API keys: the DHT answered %s", err.code().name)
            await asyncio.sleep(KEYS_REFRESH_S)

    async def limits_forever(self, on_blocked: Callable[[], None], on_used: Callable[[], None]) -> None:
        """A key that reaches a limit is refused from then until its minute ends (`on_blocked`:
        the routes change); this node's use of limited keys goes out in its key record
        (`on_used`), again only when this minute's use here changed (a new minute too)."""
        counted: dict[str, limits.Count] = {}
        while True:
            await asyncio.sleep(LIMITS_TICK_S)
            now = time.time()
            names = tuple(name for name, _ in self.blocked(now))
            if names != self.blocked_names:
                self.blocked_names = names
                on_blocked()
            if (here := self.usage.in_window(limits.window_of(now))) != counted:
                counted = here
                on_used()
