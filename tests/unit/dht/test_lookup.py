"""Tests for lookups past lying and dead contacts (services/dht/lookup.py via DhtNode), on real
kademlia nodes over UDP on 127.0.0.1."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from dhtnodes import OTHER_SECRET, seed, url_of
from kademlia.node import Node

from bench.scenarios.lying_nodes import LyingServer  # the attacker's node, a test double
from services.dht import records
from services.dht.lookup import DEAD_FOR_S, MAX_DEAD, DeadContacts, contacts
from services.dht.storage import ProviderStorage
from services.dht.unverified import UnverifiedPeers
from services.identity.trust import MeshTrust

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
    await a.announce("echo", url_of(a))

    c = await make_node("c", seeds=seed(b))  # a reader that met neither before
    c.storage.data.clear()  # what a node sent it when it joined: c must find the record in the DHT

    assert [r["worker_id"] for r in await c.find_providers("echo")] == ["a"]


async def test_a_record_is_stored_past_nodes_that_keep_nothing_and_only_keepers_count(make_node, liars):
    a = await make_node("a")
    b = await make_node("b", seeds=seed(a))
    await liars(records.storage_key("echo"), seed(a))

    _, stored_on = await a.announce("echo", url_of(a))

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
    await a.announce("echo", url_of(a))
    for server in servers:
        server.stop()
    c.storage.data.clear()  # c may be one of the holders a widened to: it must read from the others
    assert len(closest_known(c, key) & {s.node.id for s in servers}) >= 10  # most of c's k closest are dead

    started = time.monotonic()
    found = await c.find_providers("echo")
    elapsed = time.monotonic() - started

    assert elapsed < ROUTER_DEADLINE_S
    assert [r["worker_id"] for r in found] == ["a"]


@pytest.fixture
def silent() -> Iterator[list[socket.socket]]:
    """UDP sockets on loopback that never answer: where nodes that left were."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(LIARS)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    yield sockets
    for sock in sockets:
        sock.close()


async def test_contacts_that_timed_out_are_not_asked_by_the_next_lookup(make_node, silent):
    # After the liars left, each lookup waited one RPC timeout for them (the bench's p95 of
    # 504 ms): kademlia took them out of the reader's routing table, but d, a peer that had
    # not asked them since, named them again in every answer.
    key = int.from_bytes(records.storage_key("echo"), "big")
    a = await make_node("a")
    await a.announce("echo", url_of(a))  # alone: only a holds its record
    d = await make_node("d", seeds=seed(a))
    dead = [Node((key ^ i).to_bytes(20, "big"), *sock.getsockname()) for i, sock in enumerate(silent, 1)]
    for node in dead:
        d.server.protocol.router.add_contact(node)
    c = await make_node("c", seeds=(*seed(a), *seed(d)))
    protocol, asked = c.server.protocol, []

    async def counted(node: Node, target: Node):
        asked.append(node.id)
        return await type(protocol).call_find_value(protocol, node, target)

    protocol.call_find_value = counted
    assert [r["worker_id"] for r in await c.find_providers("echo")] == ["a"]
    timed_out = {node.id for node in dead if node in protocol.dead}  # here or in c's bootstrap
    assert len(timed_out) >= 10
    asked.clear()

    assert [r["worker_id"] for r in await c.find_providers("echo")] == ["a"]
    # d still names them (and may name one it promoted meanwhile from its replacement cache)
    assert d.node_id in asked and not set(asked) & timed_out


def test_a_dead_contact_is_forgotten_when_heard_from_or_after_a_while():
    now = [0.0]
    dead = DeadContacts(clock=lambda: now[0])
    gone, back = Node(b"g" * 20, "10.0.0.1", 8468), Node(b"b" * 20, "10.0.0.2", 8468)
    dead.died(gone)
    dead.died(back)

    dead.heard(("10.0.0.2", 8468))
    assert gone in dead and back not in dead
    now[0] = DEAD_FOR_S
    assert gone not in dead
    for port in range(1, MAX_DEAD + 2):
        dead.died(Node(b"x" * 20, "10.0.0.3", port))
    assert Node(b"x" * 20, "10.0.0.3", 1) not in dead and Node(b"x" * 20, "10.0.0.3", 2) in dead


def test_contacts_takes_only_well_formed_entries_and_at_most_the_limit():
    good = [b"i" * 20, "127.0.0.1", 8468]

    assert [tuple(n) for n in contacts([good, good], 5)] == [tuple(good)] * 2
    assert contacts([good] * 9, 3) and len(contacts([good] * 9, 3)) == 3
    for junk in (None, 42, {"value": 1}, [[b"short", "h", 1]], [[b"i" * 20, 5, 1]], [[b"i" * 20, "h", 0]],
                 [[b"i" * 20, "h", True]], [[b"i" * 20, "h"]], ["nope"]):
        assert contacts(junk, 5) == [], junk
