"""A provider whose backend was killed between writing a response's headers and its body
(bench failover: one failed request per kill -9 of a provider's backend) must not hand the
client a 200 with half a body: for an idempotent service the forwarding Envoy holds a
peer's short response until its last byte, so a cut one is retried like any reset; streams
still flow as they come."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.envoy_admin import EnvoyAdmin
from services.identity.mesh_ca import secret_mode_credentials
from services.router.ads import AdsServer
from services.router.xds import clusters, resources
from services.router.xds.view import Peer, RemoteService
from tests.unit.router.test_ads_envoy import (  # noqa: F401 (cfg: a fixture)
    SECRET,
    cfg,
    client_port,
    control_plane,
    credentials,
    get,
    holds,
    mesh_view,
    start_envoy,
    stop,
    wait_for_answer,
)
from tests.unit.router.test_xds import as_dict_clusters
from tests.unit.router.xds_fixtures import view

pytestmark = pytest.mark.timeout(60)

OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
BODY = b'{"answer": "whole"}'


def test_only_an_idempotent_services_answers_from_peers_are_held_whole(tmp_path):
    found = as_dict_clusters(view(tmp_path))  # echo is idempotent, ocr is not
    echo = found["remote:echo"]["typed_extension_protocol_options"][OPTIONS]
    assert [f["name"] for f in echo["http_filters"]] == ["meshworker.whole_response",
                                                          "envoy.filters.http.upstream_codec"]
    assert "typed_extension_protocol_options" not in found["remote:ocr"]
    # A node's own backend's answers are not held: that cost the local route its targets.
    assert "http_filters" not in found["local:echo"].get("typed_extension_protocol_options", {}).get(OPTIONS, {})
    # A stream (no Content-Length) or a long body is never held.
    source = echo["http_filters"][0]["typed_config"]["default_source_code"]["inline_string"]
    assert '"content-length"' in source and f"<= {clusters.WHOLE_RESPONSE_MAX_BYTES}" in source


@contextlib.asynccontextmanager
async def cutting_peer(workdir: Path, release: asyncio.Event) -> AsyncIterator[int]:
    """A peer's listener (node2's certificate of the same mesh) on a port it yields: every
    other /cut answer ends after its headers, as node2's Envoy passes on what its killed
    backend wrote; /stream sends its first chunk and the rest only once `release` is set."""
    node2 = secret_mode_credentials(SECRET, workdir, "node2", time.time())
    (workdir / "cert.pem").write_bytes(node2.certificate_chain_pem)
    (workdir / "key.pem").write_bytes(node2.private_key_pem)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(workdir / "cert.pem", workdir / "key.pem")
    cuts = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal cuts
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            while head := await reader.readuntil(b"\r\n\r\n"):
                target = head.split(b" ", 2)[1]
                if target.startswith(b"/stream"):
                    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                    await writer.drain()
                    await release.wait()
                    writer.write(b"4\r\nlast\r\n0\r\n\r\n")
                    continue
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n" % len(BODY))
                if target.startswith(b"/cut") and (cuts := cuts + 1) % 2:
                    await writer.drain()
                    break  # as a kill -9 of node2's backend between uvicorn's two writes
                writer.write(BODY)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def first_bytes_of_stream(port: int) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/service/echo/stream")
        return connection.getresponse().read1(5)
    finally:
        connection.close()


async def lua_counters(cfg) -> dict[str, int]:  # noqa: F811 (cfg: the fixture's value)
    admin = EnvoyAdmin(cfg.envoy_admin_socket)
    try:
        found = await admin.counters(r"^cluster\.remote_echo\.lua\.")
    finally:
        await admin.close()
    return {c["name"].rsplit(".", 1)[1]: c["value"] for c in found or []}


async def test_a_cut_answer_from_a_peer_is_retried_and_a_stream_flows(cfg, tmp_path):  # noqa: F811
    release = asyncio.Event()
    async with cutting_peer(tmp_path, release) as port:
        remote = (RemoteService("echo", (Peer("node2", "127.0.0.1", port),), True),)
        ads = AdsServer(resources.build(mesh_view(cfg, local=(), remote=remote, tls=credentials(cfg)), 1))
        async with control_plane(cfg.runtime_dir / "router.sock", ads):
            envoy = start_envoy(cfg)
            try:
                assert await ads.wait_until(holds(1), 15)
                client = await client_port(cfg)
                await wait_for_answer(client, "/service/echo/ready", 200)
                for _ in range(6):  # three of them cut by the peer, each retried whole
                    assert await asyncio.to_thread(get, client, "/service/echo/cut") == (200, BODY)
                # The stream's first chunk arrives while the peer still holds the rest back.
                first = asyncio.create_task(asyncio.to_thread(first_bytes_of_stream, client))
                assert await asyncio.wait_for(asyncio.shield(first), 5) == b"first"
                # ...by the script's choice: a script that fails lets a response pass unheld too.
                lua = await lua_counters(cfg)
                assert lua["executions"] >= 8 and lua["errors"] == 0, lua
            finally:
                release.set()
                stop(envoy)
