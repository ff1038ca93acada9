"""A node learns the address its DHT peers see it at (rpc_observed) and advertises it when it
knows none better: services/dht/node.py, services/dht/main.py. Real nodes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from dhtnodes import seed
from kademlia.network import Server

from services.common.config import load
from services.dht import main
from services.dht.main import AddressWatch, Overlay, advertised_url, needs_observed_address
from services.dht.node import DhtNode

pytestmark = pytest.mark.timeout(30)


def config(tmp_path, **env: str):
    return load({"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_MESH_SECRET": "s" * 32,
                 "MESHWORKER_SERVICES": "", "MESHWORKER_PEER_PORT": "8443", **env})


async def test_a_peer_answers_the_address_the_request_came_from(make_node):
    a = await make_node("a")
    b = await make_node("b", seeds=seed(a))

    assert await b.server.protocol.observed(("127.0.0.1", a.port)) == (True, "127.0.0.1")


async def test_a_node_asks_its_known_peers(make_node):
    a = await make_node("a")
    await make_node("b", seeds=seed(a))
    await make_node("c", seeds=seed(a))

    assert await a.observed_answers() == [("127.0.0.1", "127.0.0.1")] * 2


async def test_a_peer_without_the_rpc_is_left_out(make_node):
    # A node of an older version (plain kademlia here) ignores the request; it costs one RPC timeout.
    old = Server()
    await old.listen(0, "127.0.0.1")
    try:
        a = await make_node("a", seeds=(("127.0.0.1", old.transport.get_extra_info("sockname")[1]),))
        await make_node("b", seeds=seed(a))

        assert await a.observed_answers() == [("127.0.0.1", "127.0.0.1")]
    finally:
        old.stop()


def test_only_a_node_that_knows_no_better_asks(tmp_path):
    assert needs_observed_address(config(tmp_path), Overlay())
    assert not needs_observed_address(config(tmp_path), Overlay(ip="10.42.0.2"))
    assert not needs_observed_address(config(tmp_path, MESHWORKER_ADVERTISE_URL="https://h:8443"), Overlay())
    assert not needs_observed_address(config(tmp_path, MESHWORKER_DHT_SEEDS="10.0.0.1:8468"), Overlay())


def test_the_observed_address_comes_after_the_overlay_and_the_configured_url(tmp_path):
    observed = Overlay(observed="10.0.0.1")

    assert advertised_url(config(tmp_path), Overlay()) == f"https://{socket.gethostname()}:8443"
    assert advertised_url(config(tmp_path), observed) == "https://10.0.0.1:8443"
    assert advertised_url(config(tmp_path), Overlay(observed="2001:db8::1")) == "https://[2001:db8::1]:8443"
    assert advertised_url(config(tmp_path), Overlay(ip="10.42.0.2", observed="10.0.0.1")) \
        == "https://10.42.0.2:8443"
    assert advertised_url(config(tmp_path, MESHWORKER_ADVERTISE_URL="https://h:8443"), observed) \
        == "https://h:8443"


async def test_the_watch_asks_when_the_peers_change_and_else_rarely(make_node, monkeypatch):
    a = await make_node("a")
    asked = []
    answers = a.observed_answers

    async def counted():
        asked.append(1)
        return await answers()

    monkeypatch.setattr(a, "observed_answers", counted)
    overlay, watch = Overlay(), AddressWatch(a)
    await watch.update(overlay, 100.0)
    assert (overlay.observed, asked) == ("", [])  # alone: nobody to ask

    await make_node("b", seeds=seed(a))
    await watch.update(overlay, 101.0)
    assert (overlay.observed, len(asked)) == ("127.0.0.1", 1)

    await watch.update(overlay, 101.0 + main.ADDRESS_RECHECK_S - 1)
    assert len(asked) == 1
    await make_node("c", seeds=seed(a))
    await watch.update(overlay, 101.0 + main.ADDRESS_RECHECK_S - 1)
    assert len(asked) == 2


async def test_the_first_node_reannounces_at_the_address_its_peers_see(make_signer, make_node, tmp_path,
                                                                       monkeypatch):
    # The first node of a mesh: no overlay, no advertise_url, no seeds.
    monkeypatch.setattr(main, "OVERLAY_POLL_S", 0.05)
    cfg, overlay = config(tmp_path), Overlay()
    first = DhtNode("first", lambda: advertised_url(cfg, overlay), 60, make_signer("first"))
    await first.start("127.0.0.1", 0, [])
    follow = asyncio.create_task(main.follow_overlay(cfg, overlay, first))
    try:
        record, _ = await first.announce("svc")
        assert record["url"] == f"https://{socket.gethostname()}:8443"
        second = await make_node("second", seeds=seed(first))

        deadline = time.monotonic() + 10
        while [r["url"] for r in await second.find_providers("svc")] != ["https://127.0.0.1:8443"]:
            assert time.monotonic() < deadline, "the first node did not re-announce"
            await asyncio.sleep(0.05)
    finally:
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
        first.stop()
