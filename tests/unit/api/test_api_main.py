"""`meshworker run api` as a process: its socket, and its stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import sys

import aiohttp

from services.common.config import load

SERVE = """
import sys, time, uvloop
from services.api.main import serve
from services.common.config import load
uvloop.run(serve(load({"MESHWORKER_STATE_DIR": sys.argv[1], "MESHWORKER_SERVICES": ""}), time.time()))
"""


async def get_health(sock: str) -> int | None:
    try:
        async with (aiohttp.ClientSession(connector=aiohttp.UnixConnector(sock)) as session,
                    session.get("http://api/health") as resp):
            return resp.status
    except aiohttp.ClientConnectionError:
        return None


async def test_serve_replaces_a_stale_socket_with_a_0600_one_and_stops_on_sigterm(tmp_path):
    state = tmp_path / "s"
    cfg = load({"MESHWORKER_STATE_DIR": str(state), "MESHWORKER_SERVICES": ""})
    cfg.api_socket.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as stale:  # bound, then closed: a killed api's socket
        stale.bind(str(cfg.api_socket))
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", SERVE, str(state), cwd=os.getcwd())
    try:
        status = None
        for _ in range(300):
            status = await get_health(str(cfg.api_socket))
            if status is not None:
                break
            assert process.returncode is None, "the api exited"
            await asyncio.sleep(0.05)
        # nothing but the api runs: Envoy is not LIVE, so the node cannot carry requests
        assert status == 503
        assert stat.S_IMODE(os.stat(cfg.api_socket).st_mode) == 0o600
        process.send_signal(signal.SIGTERM)
        # uvicorn stops gracefully, then re-raises the signal it caught
        assert await asyncio.wait_for(process.wait(), 20) in (0, -signal.SIGTERM)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
