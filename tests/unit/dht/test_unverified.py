"""Records this node cannot verify are reported, not dropped silently: a counter on the dht's
registry, one log line per peer, and the peer in ListPeers (services/dht/unverified.py)."""

from __future__ import annotations

import logging

import pytest
from dhtnodes import OTHER_SECRET, plant, seed, url_of
from prometheus_client import CollectorRegistry

from services.common.rpc import dht_pb2
from services.dht.main import DhtServicer, Overlay
from services.dht.unverified import MAX_PEERS, UnverifiedPeers

pytestmark = pytest.mark.timeout(30)
COUNTER = "meshworker_dht_unverified_records_total"


def warnings_about(caplog, address: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "services.dht.unverified" and r.levelno == logging.WARNING and address in r.getMessage()]


async def test_a_store_from_another_mesh_is_counted_logged_and_listed(make_node, caplog):
    a = await make_node("a")
    registry = CollectorRegistry()
    servicer = DhtServicer(a, registry, Overlay())
    x = await make_node("x", seeds=seed(a), secret=OTHER_SECRET)
    assert registry.get_sample_value(COUNTER) == 0

    await x.announce("svc", url_of(x))
    await x.announce("x-only", url_of(x))

    assert registry.get_sample_value(COUNTER) == 2
    assert registry.get_sample_value("meshworker_dht_unverified_peers") == 1
    address = f"127.0.0.1:{x.port}"
    logged = warnings_about(caplog, address)
    assert len(logged) == 1 and "'x'" in logged[0]  # one line for the peer, not one per record
    reply = await servicer.ListPeers(dht_pb2.ListPeersRequest(), None)
    [peer] = reply.unverified
    assert (peer.address, peer.worker_id, peer.records) == (address, "x", 2)
    assert peer.last_seen > 0
    assert [p.address for p in reply.peers] == [address]  # the ordinary peer list is unchanged
    assert await a.find_providers("x-only") == []


async def test_a_lookup_answered_with_foreign_records_is_reported_per_arrival(make_node, make_signer, caplog):
    a = await make_node("a")
    x = await make_node("x", seeds=seed(a), secret=OTHER_SECRET)
    plant(x, make_signer("y", OTHER_SECRET), "y")  # only x holds it: no STORE reaches a
    assert a.unverified.total == 0

    assert await a.find_providers("svc") == []
    assert await a.find_providers("svc") == []

    [peer] = a.unverified.peers()
    assert (peer.address, peer.worker_id, peer.records) == (f"127.0.0.1:{x.port}", "y", 2)
    assert a.unverified.total == 2
    assert len(warnings_about(caplog, peer.address)) == 1


async def test_records_of_the_mesh_are_not_reported(make_node):
    a = await make_node("a")
    b = await make_node("b", seeds=seed(a))
    await a.announce("svc", url_of(a))
    await b.announce("svc", url_of(b))

    assert [r["worker_id"] for r in await a.find_providers("svc")] == ["a", "b"]
    assert a.unverified.total == b.unverified.total == 0
    assert a.unverified.peers() == b.unverified.peers() == []


def test_each_arrival_is_counted_and_the_claimed_worker_is_the_latest():
    clock = iter([1.0, 2.0])
    seen = UnverifiedPeers(clock=lambda: next(clock))

    seen.saw(("10.0.0.9", 8468), {"m": {"worker_id": "m"}, "n": {"worker_id": "n"}})
    seen.saw(("10.0.0.9", 8468), {"o\n\x1b[31m": "not a record"})
    seen.saw(("10.0.0.9", 8468), {})

    [peer] = seen.peers()
    assert (peer.worker_id, peer.records, peer.last_seen, seen.total) == ("o[31m", 3, 2.0, 3)


def test_the_table_of_peers_is_bounded_and_keeps_the_recent_ones():
    clock = iter(range(1, MAX_PEERS + 2))
    seen = UnverifiedPeers(clock=lambda: float(next(clock)))

    for n in range(MAX_PEERS + 1):
        seen.saw((f"10.0.{n // 250}.{n % 250}", 8468), {"m": {"worker_id": "m"}})

    addresses = [p.address for p in seen.peers()]
    assert len(addresses) == MAX_PEERS and "10.0.0.0:8468" not in addresses
    assert addresses[0] == f"10.0.0.{MAX_PEERS}:8468"
    assert seen.total == MAX_PEERS + 1
