"""Tests for services.gateway.control: how outcomes travel to the router, over real gRPC."""

from __future__ import annotations

import asyncio

import pytest
from grpc_loopback import serving

from services.common.rpc import router_pb2, router_pb2_grpc
from services.gateway import control
from services.gateway.control import RouterLink


class OutcomeSink(router_pb2_grpc.RouterServicer):
    """A router that only records the ReportOutcome calls it receives."""

    def __init__(self):
        self.batches: list[list[router_pb2.Outcome]] = []
        self.arrived = asyncio.Event()

    async def ReportOutcome(self, request, context):
        self.batches.append(list(request.outcomes))
        self.arrived.set()
        return router_pb2.ReportOutcomeResponse()


@pytest.fixture
async def link_and_sink():
    sink = OutcomeSink()
    async with serving(router_pb2_grpc.add_RouterServicer_to_server, sink) as channel:
        link = RouterLink(channel)
        sender = asyncio.create_task(link.send_outcomes())
        yield link, sink
        sender.cancel()


def success(n: int) -> router_pb2.Outcome:
    return router_pb2.Outcome(service="echo", success=True, latency_seconds=n / 1000)


async def test_successes_reported_together_share_one_call(link_and_sink):
    link, sink = link_and_sink
    for n in range(5):
        link.report(success(n))
        await asyncio.sleep(0)  # as requests finishing one after another would
    assert await link.flush()
    assert [len(batch) for batch in sink.batches] == [5]


async def test_a_failure_goes_without_waiting_for_company(link_and_sink, monkeypatch):
    monkeypatch.setattr(control, "OUTCOME_BATCH_S", 600.0)
    link, sink = link_and_sink
    link.report(router_pb2.Outcome(service="echo", success=False, worker_id="a"))
    await asyncio.wait_for(sink.arrived.wait(), 10)
    assert sink.batches[0][0].worker_id == "a"


async def test_flush_sends_queued_successes_at_once(link_and_sink, monkeypatch):
    monkeypatch.setattr(control, "OUTCOME_BATCH_S", 600.0)
    link, sink = link_and_sink
    link.report(success(1))
    assert await link.flush(timeout=10)
    assert len(sink.batches) == 1
