"""Kademlia storage that merges provider sets instead of replacing the value of a key."""

from __future__ import annotations

import time

from kademlia.storage import ForgetfulStorage

from services.common.identity import MeshTrust
from services.dht import records

KEY_BYTES = 20  # a Kademlia key: 160 bits


class ProviderStorage(ForgetfulStorage):
    """Every STORE, local or from a peer, merges into what the key already holds; records
    that are not authentic are dropped before they can displace a real one, and the only
    keys held are providers/<service>, with at most MAX_PROVIDERS_PER_KEY records that fit
    VALUE_BUDGET_BYTES (records.merge)."""

    def __init__(self, trust: MeshTrust):
        super().__init__()
        self.trust = trust

    def __setitem__(self, key: bytes, value: str) -> None:
        self.put(key, value)

    def put(self, key: bytes, value: object) -> dict[str, records.Record]:
        """Merge a STORE's value; returns the records dropped (not well formed for this key,
        or not authentic), for the caller that knows who sent them to report. Only keys of
        live providers are kept: a STORE with nothing usable creates no key, and a key whose
        last provider is gone is forgotten (kademlia would keep anything for a week)."""
        now = time.time()
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:  # a peer may send any type
            return records.decode(value)
        incoming, dropped = records.partition(records.decode(value), self.trust, key, now)
        merged = records.merge(records.decode(self.get(key)), incoming, now)  # ≤ 14 records, ≤ 6.5 KB
        if merged:
            super().__setitem__(key, records.encode(merged))
        else:
            self.data.pop(key, None)
        return dropped

    def record_count(self) -> int:
        now = time.time()
        return sum(len(records.merge({}, records.decode(v), now)) for _, v in self)
