"""Kademlia storage that merges provider sets instead of replacing the value of a key."""

from __future__ import annotations

import time

from kademlia.storage import ForgetfulStorage

from services.dht import records


class ProviderStorage(ForgetfulStorage):
    """Every STORE, local or from a peer, merges into what the key already holds."""

    def __setitem__(self, key: bytes, value: str) -> None:
        now = time.time()
        merged = records.merge(records.decode(self.get(key)), records.decode(value), now)
        super().__setitem__(key, records.encode(merged))

    def record_count(self) -> int:
        now = time.time()
        return sum(len(records.merge({}, records.decode(v), now)) for _, v in self)
