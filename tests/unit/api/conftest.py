"""`start_api`: the api on a unix socket with its doubles (router, Envoy admin, backend)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from api_doubles import MAX_BODY, FakeEnvoyAdmin, FakeRouter, backend_app, serving_api, serving_health
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_loopback import serving
from unix_site import unix_site

from services.common.config import Config, load

# Each service's invoke path on the backend double picks how it answers; `down` has no backend.
SERVICES_TOML = """
services = ["echo", "text", "fail", "slow", "down"]
[service.echo]
url = "unix:{backend}"
invoke_path = "/echo"
[service.text]
url = "unix:{backend}"
invoke_path = "/text"
[service.fail]
url = "unix:{backend}"
invoke_path = "/fail"
[service.slow]
url = "unix:{backend}"
invoke_path = "/slow"
timeout_s = 0.3
[service.down]
url = "unix:{dir}/nobody.sock"
"""


@dataclass
class Api:
    client: aiohttp.ClientSession
    cfg: Config
    router: FakeRouter
    admin: FakeEnvoyAdmin


def config(directory: Path) -> Config:
    backend = directory / "backend.sock"
    (directory / "meshworker.toml").write_text(SERVICES_TOML.format(backend=backend, dir=directory))
    return load({"MESHWORKER_STATE_DIR": str(directory), "MESHWORKER_RUNTIME_DIR": str(directory / "run"),
                 "MESHWORKER_WORKER_ID": "w1", "MESHWORKER_MAX_BODY_BYTES": str(MAX_BODY)},
                str(directory / "meshworker.toml"))


@pytest.fixture
async def start_api() -> AsyncIterator[Callable[..., Awaitable[Api]]]:
    """start_api(router=True, admin=True): the api, its backend double, and (when asked)
    the router and Envoy admin doubles; without them their sockets do not exist."""
    # Unix socket paths are limited to 107 bytes: a short directory, not tmp_path.
    directory = Path(tempfile.mkdtemp(dir="/tmp", prefix="api-"))
    async with contextlib.AsyncExitStack() as stack:
        async def start(router: bool = True, admin: bool = True) -> Api:
            cfg = config(directory)
            cfg.runtime_dir.mkdir()
            fake_router, fake_admin = FakeRouter(), FakeEnvoyAdmin()
            await stack.enter_async_context(unix_site(backend_app(), directory / "backend.sock"))
            if admin:
                await stack.enter_async_context(unix_site(fake_admin.app, cfg.envoy_admin_socket))
            others = await stack.enter_async_context(
                serving(health_pb2_grpc.add_HealthServicer_to_server, await serving_health()))
            channels = {"nebula-agent": others, "dht": others}
            if router:
                await fake_router.health.set("", health_pb2.HealthCheckResponse.SERVING)
                channels["router"] = await stack.enter_async_context(serving(FakeRouter.add_to_server, fake_router))
            client = await stack.enter_async_context(serving_api(cfg, channels))
            return Api(client, cfg, fake_router, fake_admin)

        yield start
    shutil.rmtree(directory, ignore_errors=True)
