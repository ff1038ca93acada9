"""Tests for services.gateway.proxy's failure mapping and the upstream sockets it uses."""

from __future__ import annotations

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
