"""Overlay means overlay (issue 12 M5): a node in an overlay listens for DHT traffic on its
overlay address alone, and one that joins while it runs moves there (services/dht/main.py,
DhtNode.listen). Loopback aliases (127.0.0.2, 127.0.0.3) stand in for overlay addresses:
every 127/8 address is this host's, so both ends run here without a tun device."""

from __future__ import annotations

import os

import pytest
from dhtnodes import MeshCa, RawPeer, seed, url_of

from services.common.config import load
from services.dht import state
from services.dht.main import listen_host, start_on_known_port
from services.dht.node import DhtNode

pytestmark = pytest.mark.timeout(30)


def config(tmp_path):
    return load({"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_DHT_PORT": "0", "MESHWORKER_SERVICES": ""})


async def answers_ping(address: tuple[str, int]) -> bool:
    peer = RawPeer()
    try:
        peer.request(address, "ping", os.urandom(20))
        return bool(await peer.receive(1, quiet_s=0.5))
    finally:
        peer.close()


async def test_a_node_in_an_overlay_answers_on_its_overlay_address_alone(tmp_path):
    MeshCa().enroll(tmp_path, "a", overlay_ip="127.0.0.2")
    dht = DhtNode("a", 60, MeshCa.signer(tmp_path))
    try:
        await start_on_known_port(config(tmp_path), dht, state.DhtState(), [])

        assert dht.host == "127.0.0.2"
        assert await answers_ping(("127.0.0.2", dht.port))
        assert not await answers_ping(("127.0.0.1", dht.port))  # the underlay hears nothing
    finally:
        dht.stop()


def test_outside_an_overlay_the_configured_host_is_kept(tmp_path):
    assert listen_host(config(tmp_path), MeshCa.signer(tmp_path, secret="s" * 32).trust) == "0.0.0.0"


async def test_a_join_moves_the_dht_to_the_overlay_keeping_peers_and_port(make_node, tmp_path):
    ca = MeshCa()
    ca.enroll(tmp_path / "b", "b", overlay_ip="127.0.0.1")
    b = await make_node("b", signer=ca.signer(tmp_path / "b"))
    a = await make_node("a", seeds=seed(b), signer=ca.signer(tmp_path / "a", secret="s" * 32))
    await b.announce("svc", url_of(b))
    port = a.port

    ca.enroll(tmp_path / "a", "a", overlay_ip="127.0.0.3")  # `meshworker join` while a runs
    a.signer.trust.refresh()  # the overlay's files are read again every identity.RECHECK_S
    host = listen_host(config(tmp_path / "a"), a.signer.trust)
    await a.listen(host, a.port)

    assert (a.host, a.port) == ("127.0.0.3", port) and [p.port for p in a.peers()] == [b.port]
    assert not await answers_ping(("127.0.0.1", port))
    assert [r["worker_id"] for r in await a.find_providers("svc")] == ["b"]


async def test_the_overlay_address_is_bound_before_the_host_holds_it(make_signer):
    dht = DhtNode("a", 60, make_signer("a"))
    try:  # 192.0.2.1 (TEST-NET-1) is no address of this host, as the overlay's is not before nebula is up
        await dht.start("192.0.2.1", 0, [])
        assert dht.host == "192.0.2.1" and dht.port
    finally:
        dht.stop()
