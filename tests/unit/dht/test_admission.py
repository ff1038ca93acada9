"""Tests for what a DHT request must show (services/dht/admission.py, MeshProtocol in node.py):
no answer to an address that has not proved it receives is much larger than its request,
and one host's flood is cut to a rate. A RawPeer plays whoever sends the datagrams."""

from __future__ import annotations

import os
import time

import pytest
from dhtnodes import RawPeer, plant, seed, url_of

from services.dht import admission, records
from services.dht.admission import Tokens

pytestmark = pytest.mark.timeout(30)
# An answer to an address with no token may be at most this many times the bytes asked with.
AMPLIFICATION = 2


@pytest.fixture
def raw_peer():
    peers: list[RawPeer] = []

    def make(host: str = "127.0.0.1") -> RawPeer:
        peers.append(RawPeer(host))
        return peers[-1]

    yield make
    for peer in peers:
        peer.close()


async def test_pings_from_new_node_ids_draw_no_more_than_they_sent(make_node, raw_peer):
    # H3 (issue 12): five pings with fresh node ids (250 B) drew 119 STOREs (695 KB) to the
    # sender's address: kademlia's welcome transfer sent each new contact every key it held,
    # so with a forged source address the node was an amplifier.
    a = await make_node("a")
    for i in range(10):
        await a.announce(f"svc-{i}", url_of(a))
    peer = raw_peer()

    for _ in range(5):
        peer.request(("127.0.0.1", a.port), "ping", os.urandom(20))
    answers = await peer.receive(most=1000)

    assert answers == [a.node_id] * 5
    assert peer.received <= AMPLIFICATION * peer.sent


async def test_find_answers_to_an_address_without_a_token_are_about_the_size_of_the_request(
        make_node, make_signer, raw_peer):
    a = await make_node("a")
    for name in ("b", "c", "d", "e", "f", "g"):
        await make_node(name, seeds=seed(a))
    plant(a, make_signer("m"), "m")
    key = records.storage_key("svc")
    peer = raw_peer()

    for name, token in [(n, t) for n in ("find_node", "find_value") for t in ((), (b"",), (b"forged!!",))]:
        before = (peer.sent, peer.received)
        answer = await peer.ask(("127.0.0.1", a.port), name, os.urandom(20), key, *token)
        assert not (isinstance(answer, dict) and "value" in answer), (name, token)
        assert peer.received - before[1] <= AMPLIFICATION * (peer.sent - before[0]), (name, token, answer)


async def test_the_token_given_to_an_address_unlocks_the_full_answer_at_that_address_only(
        make_node, make_signer, raw_peer):
    a = await make_node("a")
    plant(a, make_signer("m"), "m")
    key = records.storage_key("svc")
    peer, elsewhere = raw_peer(), raw_peer()

    challenge = await peer.ask(("127.0.0.1", a.port), "find_value", os.urandom(20), key, b"")
    answer = await peer.ask(("127.0.0.1", a.port), "find_value", os.urandom(20), key, challenge["token"])
    replayed = await elsewhere.ask(("127.0.0.1", a.port), "find_value", os.urandom(20), key, challenge["token"])

    assert list(records.decode(answer["value"])) == ["m"]
    assert replayed.keys() == {"token"} and replayed["token"] != challenge["token"]


async def test_only_an_asker_that_showed_a_token_enters_the_routing_table(make_node, raw_peer):
    # A forged source address must not take a place in the table (lookups would send to it).
    a = await make_node("a")
    b = await make_node("b", seeds=seed(a))
    peer = raw_peer()

    peer.request(("127.0.0.1", a.port), "ping", os.urandom(20))
    peer.request(("127.0.0.1", a.port), "find_node", os.urandom(20), os.urandom(20))
    await peer.receive(most=2)

    assert [p.port for p in a.peers()] == [b.port]


async def test_a_flood_from_one_host_is_cut_to_the_rate_while_another_host_is_answered(make_node, raw_peer):
    a = await make_node("a")
    flooder, other = raw_peer("127.0.0.1"), raw_peer("127.0.0.2")
    started = time.monotonic()
    answered = 0

    for _ in range(30):  # 3,000 pings, in chunks the sockets' buffers hold
        for _ in range(100):
            flooder.request(("127.0.0.1", a.port), "ping", os.urandom(20))
        answered += len(await flooder.receive(most=100, quiet_s=0.05))
    elapsed = time.monotonic() - started
    answered += len(await flooder.receive(most=3000, quiet_s=0.2))

    assert answered <= admission.BURST + admission.RATE_PER_S * elapsed + 1
    assert a.rate_limited() >= 3000 - answered - 100  # a few may be lost in a full buffer
    assert await other.ask(("127.0.0.1", a.port), "ping", os.urandom(20)) == a.node_id


def test_a_token_holds_for_one_address_across_one_rotation_of_the_secret():
    clock = [0.0]
    tokens = Tokens(clock=lambda: clock[0])
    token = tokens.issue(("10.0.0.1", 8468))

    assert tokens.valid(("10.0.0.1", 8468), token)
    assert not tokens.valid(("10.0.0.1", 8469), token)
    assert not tokens.valid(("10.0.0.2", 8468), token)
    assert not tokens.valid(("10.0.0.1", 8468), None)
    clock[0] += admission.TOKEN_ROTATE_S
    assert tokens.valid(("10.0.0.1", 8468), token)
    clock[0] += admission.TOKEN_ROTATE_S
    assert not tokens.valid(("10.0.0.1", 8468), token)
