"""Tests for services.gateway.node: which route the gateway takes for a request."""

from __future__ import annotations

import time

import pytest

from services.common.config import load
from services.common.rpc import router_pb2
from services.gateway.node import Gateway, live_endpoints


class CountingRouter:
    """A Router stub whose Resolve answers with one fixed route and counts its calls."""

    def __init__(self, route: router_pb2.Route):
        self.route, self.calls = route, 0

    async def Resolve(self, request, timeout):
        self.calls += 1
        return self.route


def forwarded(*endpoints: tuple[str, float]) -> router_pb2.Route:
    return router_pb2.Route(service="llm", kind=router_pb2.ROUTE_KIND_FORWARDED, healthy=True, endpoints=[
        router_pb2.Endpoint(worker_id=w, url=f"http://{w}:8000", expires_at=at) for w, at in endpoints])


@pytest.fixture
async def gateway(tmp_path):
    gw = Gateway(load({"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_MESH_SECRET": "x" * 32}), time.time())
    yield gw
    await gw.close()


def test_live_endpoints_leave_out_providers_whose_records_expired():
    now = time.time()
    route = forwarded(("a", now - 1), ("b", now + 60), ("c", now - 0.001))
    assert [e.worker_id for e in live_endpoints(route)] == ["b"]


async def test_a_table_route_with_a_live_provider_needs_no_router_call(gateway):
    gateway.router.routes["llm"] = forwarded(("a", time.time() - 1), ("b", time.time() + 60))
    gateway.router.stub = CountingRouter(forwarded())

    route, from_table = await gateway.route("llm")

    assert from_table and route is gateway.router.routes["llm"]
    assert gateway.router.stub.calls == 0


async def test_a_table_route_whose_providers_all_expired_is_asked_of_the_router(gateway):
    # The router drops expired providers itself, but its newer table may still be on its way.
    gateway.router.routes["llm"] = forwarded(("a", time.time() - 1))
    fresh = forwarded(("b", time.time() + 60))
    gateway.router.stub = CountingRouter(fresh)

    route, from_table = await gateway.route("llm")

    assert (route, from_table) == (fresh, False)
    assert gateway.router.stub.calls == 1
