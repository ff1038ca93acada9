"""Tests for services.gateway.proxy's failure mapping and the upstream sockets it uses."""

from __future__ import annotations

import asyncio
import socket

import pytest

from services.common import httpclient as client
from services.common.rpc import router_pb2
from services.gateway import proxy
from services.gateway.errors import GatewayError


def test_upstream_sockets_give_up_on_a_silent_peer():
    with socket.socket() as sock:
        client.set_dead_peer_options(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == client.KEEPALIVE_IDLE_S
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == client.KEEPALIVE_INTERVAL_S
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == client.KEEPALIVE_PROBES
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == client.USER_TIMEOUT_MS


@pytest.fixture
def unaccepting_listener():
    """A loopback port whose accept queue is full: Linux drops further SYNs, so a connect
    hangs as it does toward a host that is gone."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(2):  # backlog 0 still queues one; the next fills it
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    yield listener.getsockname()
    for s in [*fillers, listener]:
        s.close()


async def send_to(upstream: str, connect_timeout: float = proxy.CONNECT_TIMEOUT_S) -> None:
    route = router_pb2.Route(service="echo", upstream=upstream, timeout_seconds=5, idempotent=True)
    pools = client.Pools(connect_timeout)
    try:
        await proxy.send(route, pools, "POST", "/", b"", {}, b"{}")
    finally:
        pools.close()


async def test_a_connect_that_times_out_is_503_unreached(unaccepting_listener):
    host, port = unaccepting_listener
    with pytest.raises(GatewayError) as err:
        await send_to(f"http://{host}:{port}", connect_timeout=0.3)
    assert (err.value.status, err.value.code) == (503, "backend_unavailable")
    assert err.value.message == "echo backend did not accept a connection within 0.3 s"


async def test_a_refused_connection_is_503_naming_the_reason():
    with socket.socket() as closed:  # bound, never listening: connects are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with pytest.raises(GatewayError) as err:
            await send_to(f"http://127.0.0.1:{port}")
    assert (err.value.status, err.value.code) == (503, "backend_unavailable")
    assert err.value.message == "echo backend refused the connection: Connection refused"


@pytest.fixture
async def dies_on_first_request():
    """A backend that reads one request, then dies: its connection closes unanswered and its
    port refuses connections from then on, as when a backend is killed mid-request."""
    async def serve(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        server.close()
        writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()


@pytest.mark.parametrize("idempotent, answer", [(True, (503, "backend_unavailable")), (False, (502, "bad_gateway"))])
async def test_a_backend_dying_mid_request_is_retried_only_when_replay_is_safe(dies_on_first_request,
                                                                               idempotent, answer):
    route = router_pb2.Route(service="echo", upstream=dies_on_first_request, timeout_seconds=5, idempotent=idempotent)
    pools = client.Pools(proxy.CONNECT_TIMEOUT_S)
    try:
        with pytest.raises(GatewayError) as err:
            await proxy.send(route, pools, "GET", "/hello", b"", {}, b"")
    finally:
        pools.close()
    assert (err.value.status, err.value.code) == answer  # 503 tells a forwarding peer to move on


@pytest.fixture
async def dies_mid_answer():
    """A backend killed between the two writes of its answer: the head and part of the body
    arrive, then the connection resets and the port refuses connections."""
    async def half_answer(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        server.close()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.transport.abort()

    server = await asyncio.start_server(half_answer, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()


async def test_a_small_answer_cut_off_is_replayed_when_safe(dies_mid_answer):
    route = router_pb2.Route(service="echo", upstream=dies_mid_answer, timeout_seconds=5, idempotent=True)
    pools = client.Pools(proxy.CONNECT_TIMEOUT_S)
    try:
        with pytest.raises(GatewayError) as err:
            await proxy.send(route, pools, "GET", "/", b"", {}, b"")
    finally:
        pools.close()
    assert (err.value.status, err.value.code) == (503, "backend_unavailable")  # the replay found it gone


async def test_an_answer_cut_off_that_cannot_be_replayed_is_502_not_a_crash(dies_mid_answer):
    route = router_pb2.Route(service="echo", upstream=dies_mid_answer, timeout_seconds=5)
    pools = client.Pools(proxy.CONNECT_TIMEOUT_S)
    try:
        upstream = await proxy.send(route, pools, "GET", "/", b"", {}, b"")
        with pytest.raises(GatewayError) as err:
            await proxy.relay(route, upstream)
    finally:
        pools.close()
    assert (err.value.status, err.value.code) == (502, "bad_gateway")


async def test_a_backend_that_resets_a_fresh_connection_too_is_503_going_down():
    async def reset(reader, writer):  # still accepting, as a dying process may for a moment
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    route = router_pb2.Route(service="echo", upstream=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}",
                             timeout_seconds=5, idempotent=True)
    pools = client.Pools(proxy.CONNECT_TIMEOUT_S)
    try:
        with pytest.raises(GatewayError) as err:
            await proxy.send(route, pools, "GET", "/", b"", {}, b"")
    finally:
        pools.close()
        server.close()
    assert (err.value.status, err.value.code) == (503, "backend_unavailable")
    assert "going down" in err.value.message
