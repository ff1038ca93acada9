"""serve_app (services/backends/http.py): the socket a backend program listens on."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backend_server import call

SERVE = """
import sys
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from services.backends.http import serve_app

async def health(request):
    return JSONResponse({"status": "ok"})

serve_app(Starlette(routes=[Route("/health", health)]), sys.argv[1], "warning")
"""


def test_a_backend_socket_is_0600_and_serves(tmp_path):
    # L4: uvicorn's uds= made every backend socket 0666: another local user reached a backend
    # directly, around Envoy. Socket paths are limited to ~107 bytes: a short dir in /tmp.
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="be-") as short:
        path = Path(short) / "svc.sock"
        proc = subprocess.Popen([sys.executable, "-c", SERVE, str(path)], cwd=Path(__file__).parents[3])
        try:
            deadline = time.monotonic() + 30
            while call(str(path), "GET", "/health")[0] != 200:
                assert proc.poll() is None and time.monotonic() < deadline, "backend did not start"
                time.sleep(0.05)
            mode = path.lstat().st_mode
            assert stat.S_ISSOCK(mode)
            assert stat.S_IMODE(mode) == 0o600
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
