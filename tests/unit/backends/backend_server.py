"""A backend app served for a test: uvicorn on a unix socket in a background thread,
one-shot HTTP calls to it, and checks of its two error shapes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families


@contextmanager
def running(app: Any, ready_status: int | None = 200, timeout: float = 90) -> Iterator[str]:
    """Serve `app` on a unix socket in a short /tmp dir (socket paths are limited to ~107
    bytes); yield the socket path once /health answers `ready_status` (None: once bound)."""
    tmp = Path(tempfile.mkdtemp(dir="/tmp", prefix="be-"))
    path = str(tmp / "backend.sock")
    server = uvicorn.Server(uvicorn.Config(app, uds=path, log_level="warning", access_log=False,
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="backend-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started or (ready_status and call(path, "GET", "/health")[0] != ready_status):
            assert thread.is_alive() and time.monotonic() < deadline, "server did not get ready"
            time.sleep(0.05)
        yield path
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    assert not thread.is_alive(), "server thread did not stop"


async def call_async(sock: str, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock)) as session,
        session.request(method, f"http://backend{path}", **kwargs) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


def call(sock: str, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    """One HTTP request to the server on `sock`: (status, decoded JSON body); (0, None)
    while it is bound but not accepting yet."""
    try:
        return asyncio.run(call_async(sock, method, path, **kwargs))
    except aiohttp.ClientConnectionError:
        return 0, None


async def get_text(sock: str, path: str) -> tuple[int, str]:
    """GET a text (not JSON) answer, e.g. /metrics."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock)) as session,
        session.get(f"http://backend{path}") as resp,
    ):
        return resp.status, await resp.text()


def samples(sock: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The backend's /metrics as {(sample name, labels): value}."""
    status, text = asyncio.run(get_text(sock, "/metrics"))
    assert status == 200, text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def assert_error(status: int, body: Any, want_status: int, want_code: str) -> None:
    """The project's error shape, of every path outside /v1."""
    assert status == want_status, body
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == want_code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def assert_openai_error(status: int, body: Any, want_status: int, want_code: str,
                        param: str | None = None) -> None:
    """OpenAI's error shape, of every path under /v1."""
    assert status == want_status, body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, body
    kind = "server_error" if want_status >= 500 else "invalid_request_error"
    assert (error["type"], error["code"], error["param"]) == (kind, want_code, param)
    assert isinstance(error["message"], str) and error["message"]


def model_server_fixtures(create_app: Callable[[], Any]) -> tuple[Any, Any, Any]:
    """The module-scoped fixtures of a model backend's tests: `served` (socket path, app),
    `sock`, and `loaded_model`, a loader that hands over the served model so further apps
    need no reload."""

    @pytest.fixture(scope="module")
    def served() -> Iterator[tuple[str, Any]]:
        app = create_app()
        with running(app) as path:
            yield path, app

    @pytest.fixture(scope="module")
    def sock(served: tuple[str, Any]) -> str:
        return served[0]

    @pytest.fixture(scope="module")
    def loaded_model(served: tuple[str, Any]) -> Callable[[], Any]:
        model = served[1].state.slot.model
        return lambda: model

    return served, sock, loaded_model


REPO_ROOT = Path(__file__).resolve().parents[3]


def served_until_sigterm(service: str, path: Path) -> tuple[int, str]:
    """Run services/backends/<service>/main.serve on the unix socket `path` in a process of its
    own, wait until it is healthy, send it SIGTERM: its exit status and its log."""
    code = ("import logging; logging.basicConfig(level='INFO'); "
            f"from services.backends.{service}.main import serve; serve({str(path)!r}, 'info')")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        # 0: bound but not accepting yet (or still a dead server's stale file)
        while not (os.path.exists(path) and call(str(path), "GET", "/health")[0] == 200):
            assert proc.poll() is None, f"server exited with {proc.returncode}"
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, stderr
