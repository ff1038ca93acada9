"""Tests for lookups past lying and dead contacts (services/dht/lookup.py via DhtNode), on real
kademlia nodes over UDP on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import pytest
from dhtnodes import OTHER_SECRET, seed
from kademlia.node import Node

from bench.scenarios.lying_nodes import LyingServer  # the attacker's node, a test double
from services.common.identity import MeshTrust
from services.dht import records
from services.dht.lookup import contacts
from services.dht.storage import ProviderStorage
from services.dht.unverified import UnverifiedPeers

pytestmark = pytest.mark.timeout(30)
LIARS = 25  # issue 12 H2: an outsider ran 25 nodes next to providers/echo
ROUTER_DEADLINE_S = 2.0  # the router's deadline for FindProviders


@pytest.fixture
async def liars() -> AsyncIterator[Callable]:
    """liars(key, seeds) → LIARS started LyingServers whose ids are the ones next to `key`;
    every one is stopped at teardown."""
    servers: list[LyingServer] = []

    async def start(key: bytes, seeds: tuple[tuple[str, int], ...]) -> list[LyingServer]:
        for i in range(1, LIARS + 1):
            node_id = (int.from_bytes(key, "big") ^ i).to_bytes(20, "big")
            servers.append(LyingServer(ProviderStorage(MeshTrust(OTHER_SECRET)), node_id, UnverifiedPeers()))
            await servers[-1].listen(0, "127.0.0.1")
            await servers[-1].bootstrap(list(seeds))
        return servers

    yield start
    for server in servers:
        server.stop()


def closest_known(dht, key: bytes) -> set[bytes]:
    return {n.id for n in dht.server.protocol.router.find_neighbors(Node(key))}


async def test_a_provider_is_found_past_nodes_next_to_its_key_that_keep_nothing(make_node, liars):
    # H2 (issue 12): 25 nodes with ids next to providers/echo accepted STOREs and kept
    # nothing; the provider stored only on them, a lookup asked only them, and found nothing.
    a = await make_node("a")
    b = await make_node("b", seeds=seed(a))
    await liars(records.storage_key("echo"), seed(a))
    await a.announce("echo")

    c = await make_node("c", seeds=seed(b))  # a reader that met neither before
    c.storage.data.clear()  # what a node sent it when it joined: c must find the record in the DHT

    assert [r["worker_id"] for r in await c.find_providers("echo")] == ["a"]


async def test_a_record_is_stored_past_nodes_that_keep_nothing_and_only_keepers_count(make_node, liars):
    a = await make_node("a")
    b = await make_node("b", seeds=seed(a))
    await liars(records.storage_key("echo"), seed(a))

    _, stored_on = await a.announce("echo")

    assert stored_on == 2  # a and b; not the liars that accepted the STORE
    assert list(records.decode(b.storage.get(records.storage_key("echo")))) == ["a"]
    assert list(a.holders) == [b.node_id]


async def test_a_lookup_through_dead_contacts_ends_within_the_routers_deadline(make_node, liars):
    # H2 (issue 12): once the liars left, lookups through their dead contacts took 2.1 s.
    key = records.storage_key("echo")
    a = await make_node("a")
    b = await make_node("b", seeds=seed(a))
    servers = await liars(key, seed(a))
    c = await make_node("c", seeds=seed(b))
    await c.find_providers("echo")  # c meets the liars
    await a.announce("echo")
    for server in servers:
        server.stop()
    c.storage.data.clear()  # c may be one of the holders a widened to: it must read from the others
    assert len(closest_known(c, key) & {s.node.id for s in servers}) >= 10  # most of c's k closest are dead

    started = time.monotonic()
    found = await c.find_providers("echo")
    elapsed = time.monotonic() - started

    assert elapsed < ROUTER_DEADLINE_S
    assert [r["worker_id"] for r in found] == ["a"]


def test_contacts_takes_only_well_formed_entries_and_at_most_the_limit():
    good = [b"i" * 20, "127.0.0.1", 8468]

    assert [tuple(n) for n in contacts([good, good], 5)] == [tuple(good)] * 2
    assert contacts([good] * 9, 3) and len(contacts([good] * 9, 3)) == 3
    for junk in (None, 42, {"value": 1}, [[b"short", "h", 1]], [[b"i" * 20, 5, 1]], [[b"i" * 20, "h", 0]],
                 [[b"i" * 20, "h", True]], [[b"i" * 20, "h"]], ["nope"]):
        assert contacts(junk, 5) == [], junk
