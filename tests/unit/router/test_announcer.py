"""Tests for services.router.announcer against a gRPC Dht servicer that records its calls."""

from __future__ import annotations

import asyncio

import pytest
from grpc_loopback import serving

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
        if request.service == "b":
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
        yield dht, Announcer(channel, 60, {}, model_of=lambda service: "")


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
