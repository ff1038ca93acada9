"""Test support: a real node (`meshworker up` on port 0 and unix sockets), waits, images."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from netns import Host
from PIL import Image, ImageDraw, ImageFont
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 60
SENTENCE = "Meshworker reads this line 42"


def render_png(text: str) -> bytes:
    """A PNG of one line of text, large and clean enough for tesseract to read exactly."""
    image = Image.new("RGB", (1100, 140), "white")
    ImageDraw.Draw(image).text((30, 40), text, fill="black", font=ImageFont.load_default(size=48))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def descendants(pid: int) -> set[int]:
    """Every process below pid, read from /proc (children files need CONFIG_PROC_CHILDREN)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def peer_post(address: str, port: int, trusted_ca_pem: bytes, credentials, workdir: Path, path: str,
              headers: dict[str, str]) -> int | str:
    """POST `path` to a node's mTLS peer listener with a client certificate (TlsCredentials,
    or None for none): the status, or the name of the TLS error that refused it. The
    server's certificate is checked against `trusted_ca_pem`; peers are named by their
    SPIFFE id, not a host name."""
    context = ssl.create_default_context(cadata=trusted_ca_pem.decode())
    context.check_hostname = False
    if credentials is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "cert.pem").write_bytes(credentials.certificate_chain_pem)
        (workdir / "key.pem").write_bytes(credentials.private_key_pem)
        context.load_cert_chain(workdir / "cert.pem", workdir / "key.pem")
    conn = http.client.HTTPSConnection(address, port, context=context, timeout=10)
    try:
        conn.request("POST", path, b'{"n": 7}', {"Content-Type": "application/json", **headers})
        return conn.getresponse().status
    except (ssl.SSLError, ConnectionError) as err:
        return type(err).__name__
    finally:
        conn.close()


class Reply:
    def __init__(self, status: int, headers, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


class Node:
    """A node run by `meshworker up`, on this host or inside a netns.Host."""

    def __init__(self, state_dir: Path, env: dict[str, str], log_path: Path, host: Host | None = None):
        self.host = host
        self.state_dir = state_dir
        self.runtime_dir = state_dir / "run"
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.pids_seen: set[int] = set()

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            argv = [str(BIN / "meshworker"), "up"]
            self.proc = subprocess.Popen(self.host.command(argv) if self.host else argv, env=self.env, cwd=REPO,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def base_url(self) -> str:
        port = json.loads((self.runtime_dir / "gateway.json").read_text())["port"]
        return f"http://127.0.0.1:{port}"

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30) -> Reply:
        """An HTTP request to this node's gateway, from inside its host when it has one."""
        if self.host is not None:
            return self.host.call(self._request, method, path, body, headers, timeout)
        return self._request(method, path, body, headers, timeout)

    def _request(self, method: str, path: str, body: bytes | None,
                 headers: dict[str, str] | None, timeout: float) -> Reply:
        req = urllib.request.Request(self.base_url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as reply:
                return Reply(reply.status, reply.headers, reply.read())
        except urllib.error.HTTPError as err:
            return Reply(err.code, err.headers, err.read())

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post_json(self, path: str, payload) -> Reply:
        return self.request("POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def health(self) -> dict | None:
        try:
            return self.get("/health").json()
        except (OSError, ValueError):
            return None

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> dict:
        def healthy():
            assert self.proc.poll() is None, f"meshworker up exited:\n{self.log_path.read_text()[-3000:]}"
            h = self.health()
            return h if h and h.get("status") == "healthy" else None
        return wait_for(healthy, timeout, "the node to report healthy")

    def supervisorctl(self, *args: str) -> str:
        out = subprocess.run([str(BIN / "supervisorctl"), "-c", str(REPO / "supervisord.conf"), *args],
                             check=False, env=self.env, capture_output=True, text=True, timeout=30)
        return out.stdout.strip()

    def pid_of(self, program: str) -> int:
        return int(self.supervisorctl("pid", program))

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.pids_seen |= descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            raise AssertionError("meshworker up did not stop within 30 s of SIGTERM")


class ControlledBackend(BaseHTTPRequestHandler):
    """A small HTTP service the test controls: echo, slow answers, body sizes, the headers it
    got (GET /headers), and an answer that leaves the body unread (POST /unread)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status: int, payload, content_type: str = "application/json") -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/slow":
            time.sleep(3)
        if self.path == "/headers":
            return self.answer(200, {"headers": {k.lower(): self.headers.get_all(k) for k in self.headers}})
        self.answer(200, {"path": self.path, "authorization": self.headers.get("Authorization")})

    def read_body(self) -> bytes | None:
        """The body; None when the connection ended first (the gateway drops the upstream
        connection of a request whose body passed its limit)."""
        if self.headers.get("Transfer-Encoding") != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))
        chunks = []
        while size_line := self.rfile.readline():
            if not (size := int(size_line.split(b";")[0], 16)):
                self.rfile.readline()
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        return None

    def do_POST(self):
        if self.path == "/unread":  # a careless backend: what follows is read as its next request
            return self.answer(200, {"path": self.path})
        body = self.read_body()
        if body is None:
            self.close_connection = True
            return
        echo = json.loads(body) if self.path == "/" else None
        # {"content_type": ...} asks for an answer that says it is of that type.
        self.answer(200, {"echo": echo, "size": len(body), "path": self.path},
                    echo.get("content_type", "application/json") if isinstance(echo, dict) else "application/json")


def sample(metrics_text: str, family: str, **labels: str) -> float:
    """The sum of a family's samples with these labels, in a Prometheus text page."""
    return sum(s.value for f in text_string_to_metric_families(metrics_text) for s in f.samples
               if s.name == family and all(s.labels.get(k) == v for k, v in labels.items()))


def with_minute_left(seconds: float) -> None:
    """Wait, if need be, for a wall-clock minute with `seconds` left: limits per key are
    counted per minute (services/router/limits.py), and a test must not see one end."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.1)
