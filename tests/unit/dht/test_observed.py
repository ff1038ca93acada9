"""A node learns the address its DHT peers see it at (rpc_observed) and tells its router, which
advertises it when it knows none better (services/router/address.py): services/dht/node.py,
services/dht/main.py. Real nodes on 127.0.0.1."""

from __future__ import annotations

import pytest
from dhtnodes import seed
from kademlia.network import Server
from prometheus_client import CollectorRegistry

from services.common.config import load
from services.common.rpc import dht_pb2
from services.dht import main
from services.dht.main import AddressWatch, DhtServicer, Overlay

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


async def test_the_dht_tells_the_router_what_its_peers_see(make_node):
    node = await make_node("a")
    servicer = DhtServicer(node, CollectorRegistry(), Overlay(observed="10.0.0.1"))

    stats = await servicer.Stats(dht_pb2.DhtStatsRequest(), None)

    assert stats.observed_address == "10.0.0.1" and stats.port == node.port
