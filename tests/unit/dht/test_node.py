"""Tests for services.dht.node.DhtNode on real kademlia nodes over UDP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import time
import types

import pytest
from dhtnodes import OTHER_SECRET, SECRET, MeshCa, plant, seed, url_of
from kademlia.network import Server
from kademlia.node import Node
from kademlia.utils import digest

from services.common.statefile import StateError
from services.dht import node as node_module
from services.dht import records, state
from services.dht.node import DhtNode, Signer
from services.identity.node_key import NodeIdentity, unb64
from services.identity.proofs import proof_kind
from services.identity.trust import CA_PROOF_FILE, OVERLAY_DIR, MeshTrust

pytestmark = pytest.mark.timeout(30)


def summary(found: list[records.Record]) -> list[tuple[str, str]]:
    return [(r["worker_id"], r["url"]) for r in found]


async def test_start_binds_a_real_port(make_node):
    a = await make_node("a")

    assert a.port > 0
    assert a.peers() == []


async def test_kademlia_uses_the_provider_storage(make_node):
    a = await make_node("a")

    assert a.server.storage is a.storage
    assert a.server.protocol.storage is a.storage


def test_signer_proof_is_the_mesh_proof_of_its_key(make_signer):
    signer = make_signer("a")

    assert signer.proof == MeshTrust(SECRET).proof(signer.identity.public_key)


async def test_one_node_announce_then_find(make_node):
    a = await make_node("a")

    record, stored_on = await a.announce("svc", url_of(a))

    assert stored_on == 1
    assert (record["service"], record["worker_id"]) == ("svc", "a")
    assert records.is_authentic(record, MeshTrust(SECRET))
    assert summary(await a.find_providers("svc")) == [("a", "http://a:8000")]
    assert await a.find_providers("other") == []


async def test_announce_takes_ttl_and_summary(make_node):
    a = await make_node("a")

    record, _ = await a.announce("svc", url_of(a), ttl_s=10, idempotent=True, gpu_model="H100", gpu_free_bytes=5)

    assert record["expires_at"] - record["issued_at"] == pytest.approx(10)
    assert (record["idempotent"], record["gpu_model"], record["gpu_free_bytes"]) == (True, "H100", 5)
    assert records.is_authentic(record, MeshTrust(SECRET))


async def test_each_announce_says_the_url_it_is_given(make_node):
    a = await make_node("a")

    first, _ = await a.announce("svc", "https://first:8443")
    second, _ = await a.announce("svc", "https://second:8443")  # the router chose another

    assert (first["url"], second["url"]) == ("https://first:8443", "https://second:8443")
    assert second["sequence"] > first["sequence"]


async def test_withdraw_removes_the_record(make_node, monkeypatch):
    # A clock 10 s in the past that the test advances: the withdraw is 1 s after the announce.
    clock = [time.time() - 10]
    monkeypatch.setattr(node_module, "time", types.SimpleNamespace(time=lambda: clock[0]))
    a = await make_node("a")
    await a.announce("svc", url_of(a))
    clock[0] += 1

    assert await a.withdraw("svc") is True

    assert await a.find_providers("svc") == []
    assert await a.withdraw("svc") is False


async def test_withdraw_right_after_announce_removes_the_record(make_node, monkeypatch):
    # Was a bug (records.tombstone via node.withdraw): announce and withdraw in the same
    # millisecond gave the record and its tombstone the same sequence, so the record stayed.
    frozen = time.time() - 10
    monkeypatch.setattr(node_module, "time", types.SimpleNamespace(time=lambda: frozen))
    a = await make_node("a")
    await a.announce("svc", url_of(a))

    assert await a.withdraw("svc") is True

    assert await a.find_providers("svc") == []


async def test_withdraw_reaches_the_peers(make_node):
    a = await make_node("a")
    b = await make_node("b", seeds=seed(a))
    await a.announce("svc", url_of(a))
    await b.announce("svc", url_of(b))

    await a.withdraw("svc")

    assert summary(await b.find_providers("svc")) == [("b", "http://b:8000")]


async def test_second_node_finds_what_the_first_announced(make_node):
    a = await make_node("a")
    b = await make_node("b", seeds=seed(a))

    _, stored_on = await a.announce("svc", url_of(a))

    assert stored_on == 2
    assert [p.port for p in b.peers()] == [a.port]
    assert summary(await b.find_providers("svc")) == [("a", "http://a:8000")]


async def test_both_providers_found_from_either_node(make_node):
    a = await make_node("a")
    b = await make_node("b", seeds=seed(a))

    await a.announce("svc", url_of(a))
    await b.announce("svc", url_of(b))

    expected = [("a", "http://a:8000"), ("b", "http://b:8000")]
    assert summary(await a.find_providers("svc")) == expected
    assert summary(await b.find_providers("svc")) == expected


async def test_find_providers_merges_peers_records_with_local_ones(make_node, make_signer):
    # Was a bug (node.find_providers): kademlia's Server.get returns the local value whenever this
    # node holds one, so a provider stored only on a peer was never seen.
    a = await make_node("a")
    b = await make_node("b", seeds=seed(a))
    plant(a, make_signer("c"), "c")

    await b.announce("svc", url_of(b))

    assert [r["worker_id"] for r in await a.find_providers("svc")] == ["b", "c"]
    assert [r["worker_id"] for r in await b.find_providers("svc")] == ["b", "c"]


async def test_find_providers_is_the_union_over_the_nodes(make_node, make_signer):
    a = await make_node("a")
    b = await make_node("b", seeds=seed(a))
    e = await make_node("e", seeds=seed(a))
    plant(a, make_signer("c"), "c")
    plant(b, make_signer("d"), "d")

    assert [r["worker_id"] for r in await e.find_providers("svc")] == ["c", "d"]


async def test_records_of_a_node_with_another_secret_are_ignored(make_node):
    a = await make_node("a")
    b = await make_node("b", seeds=seed(a))
    x = await make_node("x", seeds=seed(a), secret=OTHER_SECRET)
    await a.announce("svc", url_of(a))

    await x.announce("svc", url_of(x))
    await x.announce("x-only", url_of(x))

    assert summary(await a.find_providers("svc")) == [("a", "http://a:8000")]
    assert summary(await b.find_providers("svc")) == [("a", "http://a:8000")]
    assert await b.find_providers("x-only") == []
    assert a.services_stored() == b.services_stored() == ["svc"]
    # ... and the outsider does not trust the mesh's records either.
    assert summary(await x.find_providers("svc")) == [("x", "http://x:8000")]


async def test_a_peer_answering_a_non_string_value_does_not_break_lookups(make_node):
    # BUG (records.py decode, via node.py find_providers): anyone who can send UDP to the DHT
    # port can join Kademlia; a peer answering FIND_VALUE with {"value": 42} makes json.loads
    # raise TypeError, which escapes find_providers, so every lookup of the service fails.
    rogue = Server()
    await rogue.listen(0, "127.0.0.1")
    try:
        a = await make_node("a", seeds=(("127.0.0.1", rogue.transport.get_extra_info("sockname")[1]),))
        await a.announce("svc", url_of(a))
        rogue.storage[digest(records.service_key("svc"))] = 42

        found = await a.find_providers("svc")
    finally:
        rogue.stop()

    assert summary(found) == [("a", "http://a:8000")]


async def test_an_outsiders_stores_over_udp_leave_nothing_behind(make_node, make_signer):
    # H3 (issue 12): the DHT stored any key from anyone (1,784 junk keys of 7 KB kept for a
    # week). Now an outsider's STOREs are refused whatever the key: junk, junk under our key
    # space, and a member's real record filed under another service's key.
    a = await make_node("a")
    outsider = Server()
    await outsider.listen(0, "127.0.0.1")
    try:
        await outsider.bootstrap([("127.0.0.1", a.port)])
        member = make_signer("m")
        echo = records.sign(records.new_record("echo", "m", "http://m:8000", 60, time.time()),
                            member.identity, member.proof)
        peer = Node(a.node_id, "127.0.0.1", a.port)
        for key, value in [(digest("junk/1"), "j" * 7000), (records.storage_key("svc"), "j" * 7000),
                           (records.storage_key("svc"), records.encode({"m": echo})),
                           (digest("junk/2"), records.encode({"m": echo}))]:
            ok, _ = await outsider.protocol.call_store(peer, key, value)
            assert ok  # it answered: the STORE arrived and was refused
    finally:
        outsider.stop()

    assert list(a.storage) == []
    assert a.services_stored() == []


async def test_services_stored_lists_live_services(make_node):
    a = await make_node("a")
    await a.announce("svc", url_of(a))
    await a.announce("other", url_of(a))

    assert a.services_stored() == ["other", "svc"]


async def test_ping_a_live_peer_gives_a_round_trip_time(make_node):
    a = await make_node("a")
    b = await make_node("b", seeds=seed(a))

    rtt = await b.ping(b.peers()[0])

    assert rtt is not None and 0 < rtt < 5


def test_peers_before_start_is_empty(make_signer):
    # Was a bug (node.py peers): before start() kademlia's Server has no protocol yet.
    assert DhtNode("a", 60, make_signer("a")).peers() == []


# --- trust from the overlay's CA -----------------------------------------------------------------

def test_the_signer_proof_becomes_the_cas_as_soon_as_the_node_joins(tmp_path):
    signer = MeshCa.signer(tmp_path, SECRET)
    assert signer.proof == MeshTrust(SECRET).proof(signer.identity.public_key)

    MeshCa().enroll(tmp_path, "a")  # `meshworker join` while the dht runs

    assert signer.proof == (tmp_path / OVERLAY_DIR / CA_PROOF_FILE).read_bytes()


async def test_members_of_one_ca_trust_each_others_records_and_no_outsider(make_node, tmp_path):
    ca = MeshCa()
    for name in ("a", "b"):
        ca.enroll(tmp_path / "ca" / name, name)
    a = await make_node("a", signer=ca.signer(tmp_path / "ca" / "a"))
    b = await make_node("b", seeds=seed(a), signer=ca.signer(tmp_path / "ca" / "b"))
    x = await make_node("x", seeds=seed(a), secret=OTHER_SECRET)  # not enrolled: a secret of its own
    other = MeshCa()
    other.enroll(tmp_path / "other" / "y", "y")
    y = await make_node("y", seeds=seed(a), signer=other.signer(tmp_path / "other" / "y"))

    record, _ = await a.announce("svc", url_of(a))
    for outsider in (x, y):
        await outsider.announce("svc", url_of(outsider))

    assert proof_kind(unb64(record["proof"])) == "ca"
    assert summary(await b.find_providers("svc")) == [("a", "http://a:8000")]
    assert summary(await a.find_providers("svc")) == [("a", "http://a:8000")]


async def test_a_revoked_nodes_records_are_dropped_even_where_they_are_held(make_node, tmp_path):
    ca = MeshCa()
    for name in ("a", "b"):
        ca.enroll(tmp_path / name, name)
    a = await make_node("a", signer=ca.signer(tmp_path / "a"))
    b = await make_node("b", seeds=seed(a), signer=ca.signer(tmp_path / "b"))
    await b.announce("svc", url_of(b))
    assert summary(await a.find_providers("svc")) == [("b", "http://b:8000")]

    ca.publish(tmp_path / "a", blocked=("b",))  # `meshworker revoke b` reached node a
    a.signer.trust.refresh()

    assert await a.find_providers("svc") == []
    assert a.services_stored() == []


# --- persisted state (services/dht/state.py) -----------------------------------------------------

def test_state_of_a_new_node_has_a_random_20_byte_id(tmp_path):
    first, second = state.load(tmp_path), state.load(tmp_path / "other")

    assert len(first.node_id) == 20
    assert first.node_id != second.node_id
    assert first.peers == []


def test_state_round_trip(tmp_path):
    saved = state.DhtState(bytes(range(20)), [("10.0.0.1", 8468), ("node-b", 9000)])

    state.save(tmp_path, saved)

    assert state.load(tmp_path) == saved
    assert (tmp_path / state.STATE_FILE).stat().st_mode & 0o777 == 0o600


CORRUPT = [
    "not json", "[]", "null", '{"peers": []}', '{"node_id": "zz", "peers": []}',
    '{"node_id": "00", "peers": [["host"]]}', '{"node_id": "00", "peers": [["host", "port"]]}',
    '{"node_id": "00"}',
    # the node ids of the wrong length: "abcd" would move the node in the keyspace, "" would
    # make kademlia pick a random id, so the file would silently not be what the node runs with
    '{"node_id": "", "peers": []}', '{"node_id": "abcd", "peers": []}',
    '{"node_id": "%s", "peers": []}' % ("00" * 21),
    # L6: a non-string peer host used to load, then fail later as an unclear TypeError
    '{"node_id": "%s", "peers": [[5, 8468]]}' % ("00" * 20),
    '{"node_id": "%s", "peers": [[null, 8468]]}' % ("00" * 20),
    '{"node_id": "%s", "peers": [["h", 70000]]}' % ("00" * 20),
    '{"node_id": "%s", "peers": "h:8468"}' % ("00" * 20),
]


@pytest.mark.parametrize("text", CORRUPT)
def test_corrupt_state_file_is_moved_aside_and_the_node_starts_fresh(tmp_path, text, caplog):
    # L6 (issue 12): a corrupt dht.json raised at every start, a restart loop until
    # supervisord gave up. Now: one error naming the file and where it went, and a new id.
    path = tmp_path / state.STATE_FILE
    path.write_text(text)

    with caplog.at_level(logging.ERROR, logger="services.dht.state"):
        fresh = state.load(tmp_path)

    assert len(fresh.node_id) == 20 and fresh.peers == [] and fresh.port == 0
    assert not path.exists()
    [aside] = tmp_path.glob(f"{state.STATE_FILE}.corrupt-*")
    assert aside.read_text() == text
    [message] = [r.getMessage() for r in caplog.records]
    assert str(path) in message and aside.name in message
    assert state.load(tmp_path).node_id != fresh.node_id  # nothing saved yet: no loop, no error
    assert len(caplog.records) == 1


def test_corrupt_state_file_that_cannot_be_moved_is_a_state_error(tmp_path, monkeypatch):
    (tmp_path / state.STATE_FILE).write_text("not json")

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(state.os, "replace", refuse)

    with pytest.raises(StateError, match=f"{state.STATE_FILE}.*could not be moved aside"):
        state.load(tmp_path)


async def test_restart_from_saved_state_keeps_the_id_and_rejoins(make_node, tmp_path):
    a = await make_node("a")
    b = await make_node("b", seeds=seed(a))
    await a.announce("svc", url_of(a))
    state.save(tmp_path, state.DhtState(b.node_id, [(p.ip, p.port) for p in b.peers()]))
    b.stop()

    saved = state.load(tmp_path)
    again = await make_node("b", seeds=tuple(saved.peers), node_id=saved.node_id)

    assert again.node_id == b.node_id
    assert [p.port for p in again.peers()] == [a.port]
    assert summary(await again.find_providers("svc")) == [("a", "http://a:8000")]


async def test_a_restart_binds_the_port_it_had_when_dht_port_is_0(tmp_path):
    from services.common.config import load
    from services.dht.main import start_on_known_port

    cfg = load({"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_DHT_PORT": "0",
                "MESHWORKER_DHT_HOST": "127.0.0.1", "MESHWORKER_MESH_SECRET": "s" * 32, "MESHWORKER_SERVICES": ""})
    signer = Signer(NodeIdentity.load_or_create(tmp_path), MeshTrust("s" * 32))
    saved = state.DhtState()
    first = DhtNode("a", 60, signer)
    await start_on_known_port(cfg, first, saved, [])
    first.stop()
    await asyncio.sleep(0.1)  # the transport closes its socket on the next loop turns
    state.save(tmp_path, saved)

    again = DhtNode("a", 60, signer)
    try:
        await start_on_known_port(cfg, again, state.load(tmp_path), [])
        assert again.port == first.port != 0
    finally:
        again.stop()
