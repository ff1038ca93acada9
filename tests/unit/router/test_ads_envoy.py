"""The ADS server against the real Envoy, started from the bootstrap meshworker writes:
Envoy takes the snapshot and serves from it, a refused configuration is logged and the
last good one kept, and a restarted Envoy has its whole configuration again at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from envoy.service.discovery.v3 import ads_pb2_grpc
from unix_site import unix_site

from services.common.config import ServiceConfig, load
from services.common.envoy_admin import EnvoyAdmin
from services.gateway.bootstrap import bootstrap, command
from services.gateway.main import envoy_binary
from services.identity.mesh_ca import TlsCredentials, secret_mode_credentials
from services.router import gateway_watch
from services.router.ads import AdsServer, Applied, Sent
from services.router.xds import resources
from services.router.xds.view import LocalService, MeshView, Peer, RemoteService

pytestmark = pytest.mark.timeout(60)


def backend(path: Path) -> contextlib.AbstractAsyncContextManager:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path_qs})
    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    return unix_site(app, path)


@contextlib.asynccontextmanager
async def control_plane(socket_path: Path, ads: AdsServer) -> AsyncIterator[None]:
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    try:
        yield
    finally:
        await server.stop(None)


def start_envoy(cfg) -> subprocess.Popen:
    path = cfg.runtime_dir / "envoy.json"
    path.write_text(json.dumps(bootstrap(cfg, open_files=1024)))
    return subprocess.Popen(command(cfg, envoy_binary(cfg), str(path)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait(10)


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture
def cfg(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir()
    return load({"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_RUNTIME_DIR": str(runtime),
                 "MESHWORKER_WORKER_ID": "node1", "MESHWORKER_SERVICES": ""})


SECRET = "the secret of the ads tests"


def credentials(cfg) -> TlsCredentials:
    return secret_mode_credentials(SECRET, cfg.state_dir, "node1", time.time())


def mesh_view(cfg, **changes) -> MeshView:
    echo = ServiceConfig("echo", f"unix:{cfg.runtime_dir / 'echo.sock'}")
    shape = {"worker_id": "node1", "listen_host": "127.0.0.1", "client_port": 0, "peer_port": 0,
                 "api_socket": str(cfg.api_socket), "max_body_bytes": 1000, "health_interval_s": 0.2,
                 "health_fail_threshold": 2, "health_ok_threshold": 1, "local": (LocalService(echo, True),)}
    return MeshView(**(shape | changes))


async def client_port(cfg) -> int:
    admin = EnvoyAdmin(cfg.envoy_admin_socket)
    try:
        return gateway_watch.ports_of(await admin.listeners() or {})["client"]
    finally:
        await admin.close()


async def wait_for_answer(port: int, path: str, status: int) -> bytes:
    deadline = time.monotonic() + 10
    while True:
        got, body = await asyncio.to_thread(get, port, path)
        if got == status or time.monotonic() > deadline:
            assert got == status, body
            return body
        await asyncio.sleep(0.1)


def holds(version: int):
    return lambda applied: all(applied.holds(version, t) for t in
                               (resources.LISTENER, resources.ROUTE, resources.CLUSTER))


async def test_envoy_serves_the_snapshot_and_keeps_the_last_good_one_after_a_nack(cfg, caplog):
    ads = AdsServer(resources.build(mesh_view(cfg), 1))
    async with backend(cfg.runtime_dir / "echo.sock"), control_plane(cfg.runtime_dir / "router.sock", ads):
        envoy = start_envoy(cfg)
        try:
            assert await ads.wait_until(holds(1), 15)
            assert stat.S_IMODE(os.stat(cfg.envoy_admin_socket).st_mode) == 0o600
            port = await client_port(cfg)
            assert json.loads(await wait_for_answer(port, "/service/echo/hello?x=1", 200)) == {"path": "/hello?x=1"}

            # A peer advertised by a name EDS cannot take: Envoy refuses the endpoints.
            bad = mesh_view(cfg, remote=(RemoteService("ocr", (Peer("node2", "not-an-ip", 8443),), True),),
                            tls=credentials(cfg))
            with caplog.at_level(logging.ERROR, logger="services.router.ads"):
                await ads.publish(resources.build(bad, 2))
                assert await ads.wait_until(lambda a: bool(a.last_nack), 10)
            assert "malformed IP address: not-an-ip" in ads.applied.last_nack
            assert "Envoy refused configuration 2 of ClusterLoadAssignment" in caplog.text
            assert json.loads(await wait_for_answer(port, "/service/echo/still", 200)) == {"path": "/still"}
        finally:
            stop(envoy)


async def test_a_restarted_envoy_has_its_whole_configuration_within_a_second(cfg):
    ads = AdsServer(resources.build(mesh_view(cfg), 1))
    async with backend(cfg.runtime_dir / "echo.sock"), control_plane(cfg.runtime_dir / "router.sock", ads):
        envoy = start_envoy(cfg)
        try:
            assert await ads.wait_until(holds(1), 15)
            await ads.publish(resources.build(mesh_view(cfg, local=()), 2))  # echo is gone: to the api
            assert await ads.wait_until(holds(2), 10)
            stop(envoy)
            assert await ads.wait_until(lambda a: not a.connected, 5)
            started = time.monotonic()
            envoy = start_envoy(cfg)
            assert await ads.wait_until(lambda a: a.connected and holds(2)(a), 10)
            took = time.monotonic() - started
            port = await client_port(cfg)
            await wait_for_answer(port, "/service/echo/x", 503)  # no api here: not echo's 200 of configuration 1
            print(f"restarted Envoy held configuration 2 after {took:.2f} s")
        finally:
            stop(envoy)


def test_applied_needs_every_named_resource():
    applied = Applied(connected=True, acked={resources.ENDPOINT: Sent(3, "n", (), ("remote:a",))})
    assert applied.holds(3, resources.ENDPOINT, "remote:a")
    assert not applied.holds(3, resources.ENDPOINT, "remote:b")
    assert not applied.holds(4, resources.ENDPOINT)
    assert applied.version() == 3

