"""The cap on keys one signer holds in a node's storage (services.dht.storage, issue 12 H3):
a member's key, wherever its STOREs come from, cannot fill the storage of the others."""

from __future__ import annotations

import logging
import time

import pytest
from test_records import TRUST, identity_of, signed

from services.dht import records
from services.dht.storage import MAX_KEYS_PER_SIGNER, ProviderStorage

pytestmark = pytest.mark.timeout(30)


def store(storage: ProviderStorage, worker: str, service: str, now: float, **kwargs) -> None:
    storage.put(records.storage_key(service), records.encode({worker: signed(worker, now, service=service, **kwargs)}))


def held_by(storage: ProviderStorage, worker: str) -> list[str]:
    return sorted(r["service"] for _, value in storage for r in records.decode(value).values()
                  if r["worker_id"] == worker)


def test_a_signer_holds_at_most_its_share_of_keys_and_others_are_unaffected(caplog):
    storage, now = ProviderStorage(TRUST), time.time()
    services = [f"junk{i}" for i in range(MAX_KEYS_PER_SIGNER + 10)]

    with caplog.at_level(logging.WARNING, logger="services.dht.storage"):
        for service in services:
            store(storage, "greedy", service, now)
        store(storage, "greedy", "junk0", now + 1)  # a key it holds: a newer record is taken
    store(storage, "honest", "junk70", now)

    assert held_by(storage, "greedy") == sorted(services[:MAX_KEYS_PER_SIGNER])
    assert records.decode(storage.get(records.storage_key("junk0")))["greedy"]["issued_at"] == now + 1
    assert held_by(storage, "honest") == ["junk70"]
    assert storage.over_quota == 10
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and "'greedy'" in refusals[0].getMessage()  # one line per signer


def test_a_key_given_up_frees_its_place():
    storage, now = ProviderStorage(TRUST), time.time()
    for i in range(MAX_KEYS_PER_SIGNER):
        store(storage, "a", f"svc{i}", now - 5)
    node = identity_of("a")
    gone = records.sign(records.tombstone(signed("a", now - 5, service="svc0"), now), node, TRUST.proof(node.public_key))
    storage.put(records.storage_key("svc0"), records.encode({"a": gone}))  # a withdrew svc0

    store(storage, "a", "new", now)

    assert "new" in held_by(storage, "a") and "svc0" not in held_by(storage, "a")
    assert storage.over_quota == 0


def test_an_expired_record_frees_its_place():
    storage, now = ProviderStorage(TRUST), time.time()
    store(storage, "a", "short", now - 30, ttl_s=10)  # expired, though still filed under its key
    for i in range(MAX_KEYS_PER_SIGNER - 1):
        store(storage, "a", f"svc{i}", now)

    store(storage, "a", "new", now)

    assert "new" in held_by(storage, "a") and storage.over_quota == 0
