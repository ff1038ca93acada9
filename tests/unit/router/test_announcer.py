"""Tests for services.router.announcer against a gRPC Dht servicer that records its calls."""

from __future__ import annotations

import asyncio

import pytest
from grpc_loopback import serving

from services.common.keys import KEYS
from services.common.models import CATALOG
from services.common.rpc import dht_pb2, dht_pb2_grpc
from services.router.announcer import Announcer

pytestmark = pytest.mark.timeout(30)


class RecordingDht(dht_pb2_grpc.DhtServicer):
    """Announce of "a" completes only once "b" has been announced too: announcing one
    service after another, in name order, would never get past "a"."""

    def __init__(self):
        self.announced: list[str] = []
        self.withdrawn: list[str] = []
        self.b_arrived = asyncio.Event()

    async def Announce(self, request, context):
        self.announced.append(request.service)
        self.models, self.keys = list(request.models), list(request.keys)
        self.hardware = (request.gpu_model, request.gpu_free_bytes)
        self.url = request.url
        if request.service in ("b", CATALOG, KEYS):
            self.b_arrived.set()
        else:
            await self.b_arrived.wait()
        return dht_pb2.AnnounceResponse()

    async def Withdraw(self, request, context):
        self.withdrawn.append(request.service)
        return dht_pb2.WithdrawResponse()


@pytest.fixture
async def dht_and_announcer():
    dht = RecordingDht()
    async with serving(dht_pb2_grpc.add_DhtServicer_to_server, dht) as channel:
        yield dht, Announcer(channel, 60, {}, model_of=lambda service: "", catalog_of=lambda: list(CATALOG_NOW),
                             url_of=lambda: URL[0], key_record_of=lambda: {"keys": list(KEYS_NOW)},
                             hardware_of=lambda: {"gpu_model": "NVIDIA L4", "gpu_free_bytes": 7})


CATALOG_NOW: list[dht_pb2.Model] = []
URL: list[str | None] = ["https://10.0.0.1:8443"]  # where peers reach this node, as the router chose it
KEYS_NOW: list[dht_pb2.ApiKey] = []
SMOL = dht_pb2.Model(id="smol", kind="chat", service="llm", load_percent=0)


async def test_services_are_announced_together_not_one_after_another(dht_and_announcer):
    dht, announcer = dht_and_announcer
    for service in ("a", "b"):
        announcer.set_health(service, True)

    assert await asyncio.wait_for(announcer._sync(), 10)
    assert sorted(dht.announced) == ["a", "b"]


async def test_an_unhealthy_service_is_withdrawn_once(dht_and_announcer):
    dht, announcer = dht_and_announcer
    announcer.set_health("c", False)

    assert await announcer._sync() and await announcer._sync()
    assert dht.withdrawn == ["c"]


async def test_the_catalog_is_stored_when_it_changes_and_withdrawn_when_it_empties(dht_and_announcer):
    dht, announcer = dht_and_announcer
    CATALOG_NOW[:] = [SMOL]
    try:
        assert await announcer._sync_summary(CATALOG) and await announcer._sync_summary(CATALOG)
        assert dht.announced == [CATALOG] and dht.models == [SMOL]  # once: nothing changed

        CATALOG_NOW[:] = [dht_pb2.Model(id="smol", kind="chat", service="llm", load_percent=100)]
        assert await announcer._sync_summary(CATALOG)
        assert dht.announced == [CATALOG, CATALOG] and dht.models[0].load_percent == 100

        CATALOG_NOW[:] = []
        assert await announcer._sync_summary(CATALOG)
        assert dht.withdrawn == [CATALOG]
    finally:
        CATALOG_NOW.clear()


async def test_a_drained_node_withdraws_its_catalog(dht_and_announcer):
    dht, announcer = dht_and_announcer
    CATALOG_NOW[:] = [SMOL]
    try:
        assert await announcer._sync_summary(CATALOG)
        await announcer.drain()
        assert CATALOG in dht.withdrawn
    finally:
        CATALOG_NOW.clear()


async def test_a_drained_node_keeps_publishing_the_keys_it_made(dht_and_announcer):
    # Draining stops this node's services; the mesh's API keys stay in force.
    dht, announcer = dht_and_announcer
    KEYS_NOW[:] = [dht_pb2.ApiKey(id="mk-0123456789ab", name="ci", public_key="x" * 43)]
    try:
        await announcer.drain()
        assert await announcer._sync_summary(KEYS)
        assert dht.announced[-1] == KEYS and dht.keys == KEYS_NOW and KEYS not in dht.withdrawn
    finally:
        KEYS_NOW.clear()


async def test_a_backend_turning_healthy_has_the_catalog_stored_again(dht_and_announcer):
    # Its models were read before its health settled: only now may the catalog list them.
    _, announcer = dht_and_announcer
    announcer.set_health("llm", True)
    assert announcer.summaries[CATALOG].wake.is_set()


async def test_every_record_says_the_hardware_the_router_read(dht_and_announcer):
    dht, announcer = dht_and_announcer
    announcer.set_health("b", True)
    assert await announcer._sync()
    assert dht.hardware == ("NVIDIA L4", 7)

    KEYS_NOW[:] = [dht_pb2.ApiKey(id="mk-0123456789ab", name="ci", public_key="x" * 43)]
    try:
        dht.hardware = None
        assert await announcer._sync_summary(KEYS)
        assert dht.hardware == ("NVIDIA L4", 7)
    finally:
        KEYS_NOW.clear()


async def test_republish_stores_every_record_again(dht_and_announcer):
    _, announcer = dht_and_announcer
    announcer.summaries[CATALOG].stored = {"models": []}

    announcer.republish()

    assert announcer._wake.is_set() and all(s.wake.is_set() and s.stored is None for s in announcer.summaries.values())


async def test_nothing_is_stored_before_the_peer_port_is_bound_and_then_it_is(dht_and_announcer):
    dht, announcer = dht_and_announcer
    announcer.set_health("b", True)
    CATALOG_NOW[:] = [SMOL]
    URL[0] = None  # Envoy has not bound its peer port: a record must never say port 0
    try:
        assert not await announcer._sync() and not await announcer._sync_summary(CATALOG)
        assert dht.announced == []

        URL[0] = "https://10.0.0.1:8443"
        assert await announcer._sync() and await announcer._sync_summary(CATALOG)
        assert sorted(dht.announced) == [CATALOG, "b"] and dht.url == "https://10.0.0.1:8443"
    finally:
        URL[0] = "https://10.0.0.1:8443"
        CATALOG_NOW.clear()
