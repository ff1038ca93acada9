"""Tests for services.gateway.proxy's failure mapping and the upstream sockets it uses."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
from http_loopback import Scripted

from services.common import httpclient as client
from services.common.rpc import router_pb2
from services.gateway import proxy
from services.gateway.errors import GatewayError


def route_to(upstream: str, idempotent: bool = False) -> router_pb2.Route:
    return router_pb2.Route(service="echo", upstream=upstream, timeout_seconds=5, idempotent=idempotent)


async def refusal(upstream: str, idempotent: bool = False,
                  connect_timeout: float = proxy.CONNECT_TIMEOUT_S) -> GatewayError:
    """What proxy.send raises for a GET to `upstream`."""
    pools = client.Pools(connect_timeout)
    try:
        with pytest.raises(GatewayError) as err:
            await proxy.send(route_to(upstream, idempotent), pools, "GET", "/", b"", {}, b"")
    finally:
        pools.close()
    return err.value


@contextlib.asynccontextmanager
async def backend(handler) -> AsyncIterator[str]:
    """A scripted loopback backend running `handler(reader, writer, listener)` per connection:
    the handler may stop the listener, as a backend that dies does."""
    async with Scripted(lambda reader, writer: handler(reader, writer, scripted.server)) as scripted:
        yield scripted.url


async def dies_on_first_request(reader, writer, server):
    """Reads one request, then dies: its connection closes unanswered and its port refuses
    connections from then on, as when a backend is killed mid-request."""
    await reader.readuntil(b"\r\n\r\n")
    server.close()
    writer.transport.abort()


async def dies_mid_answer(reader, writer, server):
    """Killed between the two writes of its answer: the head and part of the body arrive,
    then the connection resets and the port refuses connections."""
    await reader.readuntil(b"\r\n\r\n")
    server.close()
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
    await writer.drain()
    writer.transport.abort()


async def resets_everything(reader, writer, server):
    """Still accepting but resetting every request, as a dying process may for a moment."""
    await reader.readuntil(b"\r\n\r\n")
    writer.transport.abort()


async def test_upstream_sockets_give_up_on_a_silent_peer():
    async with backend(resets_everything) as url:
        pool = client.Pool(url, connect_timeout=5)
        connection = await pool.connect()  # the pool's own socket, not one set up here
        sock = connection.transport.get_extra_info("socket")
        try:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == client.KEEPALIVE_IDLE_S
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == client.KEEPALIVE_INTERVAL_S
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == client.KEEPALIVE_PROBES
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == client.USER_TIMEOUT_MS
        finally:
            connection.abort()


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


async def test_a_connect_that_times_out_is_503_unreached(unaccepting_listener):
    host, port = unaccepting_listener
    err = await refusal(f"http://{host}:{port}", connect_timeout=0.3)
    assert (err.status, err.code) == (503, "backend_unavailable")
    assert err.message == "echo backend did not accept a connection within 0.3 s"


async def test_a_refused_connection_is_503_naming_the_reason():
    with socket.socket() as closed:  # bound, never listening: connects are refused
        closed.bind(("127.0.0.1", 0))
        err = await refusal(f"http://127.0.0.1:{closed.getsockname()[1]}")
    assert (err.status, err.code) == (503, "backend_unavailable")
    assert err.message == "echo backend refused the connection: Connection refused"


@pytest.mark.parametrize("idempotent, answer", [(True, (503, "backend_unavailable")), (False, (502, "bad_gateway"))])
async def test_a_backend_dying_mid_request_is_retried_only_when_replay_is_safe(idempotent, answer):
    async with backend(dies_on_first_request) as url:
        err = await refusal(url, idempotent)
    assert (err.status, err.code) == answer  # 503 tells a forwarding peer to move on


async def test_a_small_answer_cut_off_is_replayed_when_safe():
    async with backend(dies_mid_answer) as url:
        err = await refusal(url, idempotent=True)
    assert (err.status, err.code) == (503, "backend_unavailable")  # the replay found it gone


async def test_an_answer_cut_off_that_cannot_be_replayed_is_502_not_a_crash():
    pools = client.Pools(proxy.CONNECT_TIMEOUT_S)
    async with backend(dies_mid_answer) as url:
        route = route_to(url)
        try:
            upstream = await proxy.send(route, pools, "GET", "/", b"", {}, b"")
            with pytest.raises(GatewayError) as err:
                await proxy.relay(route, upstream)
        finally:
            pools.close()
    assert (err.value.status, err.value.code) == (502, "bad_gateway")


async def test_a_backend_that_resets_a_fresh_connection_too_is_503_going_down():
    async with backend(resets_everything) as url:
        err = await refusal(url, idempotent=True)
    assert (err.status, err.code) == (503, "backend_unavailable") and "going down" in err.message
