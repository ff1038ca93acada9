"""Kademlia storage that merges provider sets instead of replacing the value of a key."""

from __future__ import annotations

import time

from kademlia.storage import ForgetfulStorage

from services.common.identity import MeshTrust
from services.dht import records


class ProviderStorage(ForgetfulStorage):
    """Every STORE, local or from a peer, merges into what the key already holds; records
    that are not authentic are dropped before they can displace a real one."""

    def __init__(self, trust: MeshTrust):
        super().__init__()
        self.trust = trust

    def __setitem__(self, key: bytes, value: str) -> None:
        self.put(key, value)

    def put(self, key: bytes, value: object) -> dict[str, records.Record]:
        """Merge a STORE's value; returns the records dropped as not authentic, for the
        caller that knows who sent them to report."""
        incoming, dropped = records.partition(records.decode(value), self.trust)
        merged = records.merge(records.decode(self.get(key)), incoming, time.time())
        super().__setitem__(key, records.encode(merged))
        return dropped

    def record_count(self) -> int:
        now = time.time()
        return sum(len(records.merge({}, records.decode(v), now)) for _, v in self)
