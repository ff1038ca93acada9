"""Tests for services.gateway.proxy's failure mapping and the upstream sockets it uses."""

from __future__ import annotations

import socket

import pytest

from services.common import upstream
from services.common.rpc import router_pb2
from services.gateway import proxy
from services.gateway.errors import GatewayError


def test_upstream_sockets_give_up_on_a_silent_peer():
    sock = upstream.dead_peer_aware_socket((socket.AF_INET, socket.SOCK_STREAM, 0, "", ("127.0.0.1", 1)))
    with sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == upstream.KEEPALIVE_IDLE_S
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == upstream.KEEPALIVE_INTERVAL_S
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == upstream.KEEPALIVE_PROBES
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == upstream.USER_TIMEOUT_MS


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


async def test_a_connect_that_times_out_is_503_unreached(unaccepting_listener, monkeypatch):
    monkeypatch.setattr(proxy, "CONNECT_TIMEOUT_S", 0.3)
    host, port = unaccepting_listener
    route = router_pb2.Route(service="echo", upstream=f"http://{host}:{port}", timeout_seconds=5)
    upstreams = proxy.Upstreams()
    try:
        with pytest.raises(GatewayError) as err:
            await proxy.send(route, upstreams, "POST", "/", b"", {}, b"{}")
    finally:
        await upstreams.close()
    assert (err.value.status, err.value.code) == (503, "backend_unavailable")
    assert "did not accept a connection within 0.3 s" in err.value.message
