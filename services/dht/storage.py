"""Kademlia storage that merges provider sets instead of replacing the value of a key."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from kademlia.storage import ForgetfulStorage

from services.dht import records
from services.dht.unverified import claimed_worker
from services.identity.trust import MeshTrust

log = logging.getLogger(__name__)
KEY_BYTES = 20  # a Kademlia key: 160 bits
# A member stores one key per service it hosts, its catalog record (@models) and its key
# record (@keys): a handful of keys, a few dozen for a node with many services. Past this,
# one member's key would be filling every other member's storage (issue 12 H3).
MAX_KEYS_PER_SIGNER = 64
MAX_TOLD = 256  # signers whose refusal was logged; one line per signer, not per STORE


class ProviderStorage(ForgetfulStorage):
    """Every STORE, local or from a peer, merges into what the key already holds; records
    that are not authentic are dropped before they can displace a real one, and the only
    keys held are providers/<service>, with at most MAX_PROVIDERS_PER_KEY records that fit
    VALUE_BUDGET_BYTES (records.merge).

    A signer (the member key a record is signed with) holds live records under at most
    MAX_KEYS_PER_SIGNER keys here. The signer, not the STORE's source address: a record is
    its signer's wherever it comes from, a STORE's source address is whatever its datagram
    claims (so a forger could use up a member's share), and nodes behind one NAT share one.
    """

    def __init__(self, trust: MeshTrust):
        super().__init__()
        self.trust = trust
        self.keys_of: dict[str, set[bytes]] = {}  # signer -> keys it held a live record under
        self.over_quota = 0  # records refused since start: meshworker_dht_over_quota_records_total
        self._told: OrderedDict[str, None] = OrderedDict()

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
        held = records.decode(self.get(key))
        merged = records.merge(held, self._within_quota(key, incoming, now), now)  # ≤ 14 records, ≤ 6.5 KB
        if merged:
            super().__setitem__(key, records.encode(merged))
        else:
            self.data.pop(key, None)
        self._index(key, held, merged)
        return dropped

    def _within_quota(self, key: bytes, incoming: dict[str, records.Record], now: float) -> dict[str, records.Record]:
        """The authentic records whose signer holds this key already, or fewer than the cap."""
        admitted = {}
        for worker, record in incoming.items():
            if key in self.keys_of.get(record["key"], ()) or self._keys_held(record["key"], now) < MAX_KEYS_PER_SIGNER:
                admitted[worker] = record
            else:
                self._refused(record)
        return admitted

    def _keys_held(self, signer: str, now: float) -> int:
        """Keys `signer` holds a live record under. The index is updated only when a key is
        stored to, so it may still name keys whose record expired, was pushed out or culled:
        those are checked (and forgotten) only when they would refuse a record."""
        keys = self.keys_of.get(signer, set())
        if len(keys) >= MAX_KEYS_PER_SIGNER:
            keys -= {key for key in keys if not self._holds(signer, key, now)}
        return len(keys)

    def _holds(self, signer: str, key: bytes, now: float) -> bool:
        _, value = self.data.get(key, (0.0, None))  # kademlia keeps (when stored, value)
        return any(r.get("key") == signer for r in records.merge({}, records.decode(value), now).values())

    def _index(self, key: bytes, held: dict[str, records.Record], merged: dict[str, records.Record]) -> None:
        after = {r.get("key") for r in merged.values()}
        for signer in {r.get("key") for r in held.values()} - after:
            keys = self.keys_of.get(signer)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.keys_of[signer]
        for signer in after:
            self.keys_of.setdefault(signer, set()).add(key)

    def _refused(self, record: records.Record) -> None:
        self.over_quota += 1
        if record["key"] in self._told:
            return
        self._told[record["key"]] = None
        if len(self._told) > MAX_TOLD:
            self._told.popitem(last=False)
        log.warning("DHT member %s (worker %r) holds records under %d keys here already: its records for "
                    "more keys are refused", record["key"][:12], claimed_worker(None, record), MAX_KEYS_PER_SIGNER)

    def record_count(self) -> int:
        now = time.time()
        return sum(len(records.merge({}, records.decode(v), now)) for _, v in self)
