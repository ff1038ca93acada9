"""What the scenarios call: the small backend and a meshworker node (bench.proxies: the
baseline proxies in front of the backend).

Each is a context manager that starts its process(es) on enter, waits until they answer
(polling with a deadline, never a fixed sleep), and stops them on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import grpc

from bench import procs
from services.common.rpc import dht_pb2, dht_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
READY_DEADLINE_S = 60
SERVICE = "bench"


def http_get_json(url: str, timeout_s: float = 2) -> dict:
    with urllib.request.urlopen(url, timeout=timeout_s) as reply:
        return json.load(reply)


@contextlib.contextmanager
def stopped_on_failure(target):
    """Stop what target.__enter__ already started if it then fails, Ctrl-C included: a `with`
    statement calls __exit__ only once __enter__ has returned."""
    try:
        yield
    except BaseException:
        target.__exit__(None, None, None)
        raise


class ServerProcess:
    """A process serving HTTP on 127.0.0.1:<port>, healthy once its /health says so."""

    proc: subprocess.Popen | None = None
    port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, what: str) -> None:
        # "healthy": the bench's backend and a node; "ok": a built-in model backend behind a proxy.
        procs.wait_until(lambda: http_get_json(f"{self.url}/health")["status"] in ("healthy", "ok"),
                         READY_DEADLINE_S, what)

    def __exit__(self, *exc) -> None:
        if self.proc:
            procs.stop(self.proc)


class Backend(ServerProcess):
    """bench/backend.py in its own process; it binds port 0 and prints the port."""

    def __init__(self, workdir: Path):
        self.workdir = workdir

    def __enter__(self) -> Self:
        self.proc = procs.spawn([sys.executable, "-m", "bench.backend"], self.workdir / "backend.log",
                                stdout=subprocess.PIPE, cwd=REPO)
        with stopped_on_failure(self):
            self.port = int(procs.read_first_line(self.proc, READY_DEADLINE_S))
            self.wait_healthy("backend")
        return self


@dataclass(frozen=True)
class Hosted:
    """A service a node hosts: its backend's URL, and a command when the node runs it itself.
    No URL: one of meshworker's built-ins (vision-ocr, rag-embeddings, llm-inference), which the
    node runs itself on <state>/run/svc-<name>.sock with no [service.<name>] table."""
    name: str
    url: str = ""
    command: tuple[str, ...] = ()
    idempotent: bool = False


def supervised_backend(state_dir: Path, name: str = SERVICE) -> Hosted:
    """bench/backend.py as the node's own program svc-<name>, on a unix socket in its runtime dir.
    Run as a script: supervisord starts it with the node's environment, not from this checkout."""
    sock = state_dir / "run" / f"svc-{name}.sock"
    return Hosted(name, f"unix:{sock}", (sys.executable, str(REPO / "bench" / "backend.py"), "--unix", str(sock)),
                  idempotent=True)


def node_toml(services: list[Hosted]) -> str:
    # json.dumps writes strings and lists of strings as TOML accepts them.
    lines = [f"services = {json.dumps([s.name for s in services])}", ""]
    for svc in (s for s in services if s.url):
        lines += [f"[service.{svc.name}]", f"url = {json.dumps(svc.url)}", 'health_path = "/health"',
                  'invoke_path = "/"']
        lines += [f"command = {json.dumps(list(svc.command))}"] if svc.command else []
        lines += ["idempotent = true"] if svc.idempotent else []
        # The bench's backends read every request body (uvicorn, the chat double).
        lines.append("reuse_connections = true")
        lines.append("")
    return "\n".join(lines)


class Node:
    """`meshworker up` with the given services (by default one, `bench`, at backend_url).

    env adds MESHWORKER_* settings (a mesh secret, seeds, a worker id). launch() and
    wait_ready() let a caller start several nodes at once; `with Node(...)` does both.
    ready_deadline_s bounds the wait for a healthy node (longer where models must load).
    """

    def __init__(self, backend_url: str | None = None, *, services: list[Hosted] | None = None,
                 env: dict[str, str] | None = None, state_dir: Path | None = None,
                 ready_deadline_s: float = READY_DEADLINE_S):
        self.state_dir = state_dir or procs.make_tmpdir()
        self.services = services if services is not None else [Hosted(SERVICE, backend_url)]
        self.env = env or {}
        self.ready_deadline_s = ready_deadline_s
        self.proc: subprocess.Popen | None = None
        self.gateway_port = 0
        self.peer_port = 0  # Envoy's mTLS listener for peers: what the node's records advertise
        self.started_at = 0.0
        self.healthy_after_s = 0.0

    def __enter__(self) -> Self:
        self.launch()
        with stopped_on_failure(self):
            self.wait_ready()
        return self

    def launch(self) -> None:
        config = self.state_dir / "meshworker.toml"
        config.write_text(node_toml(self.services))
        # Fixed ports, chosen free here, not port 0: a restarted Envoy (failover kills it) must
        # bind the ports the clients and the peers' records know. Each node its own peer port:
        # Envoy's listeners set SO_REUSEPORT, so two nodes on a shared 8443 would both "bind" it.
        if not (self.gateway_port and self.peer_port):
            self.gateway_port, self.peer_port = procs.free_tcp_ports(2)
        env = dict(os.environ, MESHWORKER_STATE_DIR=str(self.state_dir),
                   MESHWORKER_GATEWAY_PORT=str(self.gateway_port), MESHWORKER_PEER_PORT=str(self.peer_port),
                   MESHWORKER_DHT_PORT="0", MESHWORKER_CONFIG=str(config), MESHWORKER_LOG_LEVEL="WARNING",
                   **self.env)
        self.started_at = time.perf_counter()
        self.proc = procs.spawn([str(VENV_BIN / "meshworker"), "up"], self.state_dir / "node.log",
                                env=env, cwd=REPO)

    def wait_ready(self) -> None:
        try:
            self.gateway_port = procs.wait_until(self._healthy_port, self.ready_deadline_s, "meshworker node")
        except (TimeoutError, RuntimeError, OSError) as err:
            raise RuntimeError(f"node did not become healthy ({err}); its log ends:\n"
                               f"{self.log_tail()}") from None
        self.healthy_after_s = time.perf_counter() - self.started_at

    def _healthy_port(self) -> int | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"meshworker up exited with {self.proc.returncode}")
        ports = json.loads((self.state_dir / "run" / "gateway.json").read_text())
        port, self.peer_port = ports["port"], ports["peer_port"]
        health = http_get_json(f"http://127.0.0.1:{port}/health")
        hosted = {s.name for s in self.services}
        return port if health["status"] == "healthy" and hosted <= set(health["services"]) else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def peer_url(self) -> str:
        """What this node advertises to peers on loopback: its Envoy's mTLS listener."""
        return f"https://127.0.0.1:{self.peer_port}"

    def health(self) -> dict:
        """GET /health, also when it answers 503 (unhealthy)."""
        try:
            return http_get_json(f"{self.url}/health")
        except urllib.error.HTTPError as err:
            return json.load(err)

    def routing(self) -> dict:
        """The router's counters from GET /stats (current: the gateway flushes its outcomes first)."""
        return http_get_json(f"{self.url}/stats", timeout_s=10)["routing"]

    def dht(self, method: str, request):
        """Call this node's dht over its unix socket, e.g. dht("Stats", dht_pb2.DhtStatsRequest())."""
        with grpc.insecure_channel(f"unix:{self.state_dir / 'run' / 'dht.sock'}") as channel:
            return getattr(dht_pb2_grpc.DhtStub(channel), method)(request, timeout=2)

    def dht_port(self) -> int:
        return self.dht("Stats", dht_pb2.DhtStatsRequest()).port

    def supervisorctl(self, *args: str) -> str:
        done = subprocess.run([str(VENV_BIN / "supervisorctl"), "-c", str(REPO / "supervisord.conf"), *args],
                              capture_output=True, text=True, timeout=30, check=False,
                              env=dict(os.environ, MESHWORKER_RUNTIME_DIR=str(self.state_dir / "run")))
        return (done.stdout + done.stderr).strip()

    def program_pid(self, program: str) -> int:
        """The pid supervisord gives for one of the node's programs (dht, router, svc-bench)."""
        answer = self.supervisorctl("pid", program)
        if not answer.isdigit() or int(answer) == 0:
            raise RuntimeError(f"supervisorctl pid {program}: {answer}")
        return int(answer)

    def programs(self) -> dict[int, str]:
        """pid -> supervisord's program name, for the programs running now."""
        names = {}
        for line in self.supervisorctl("status").splitlines():
            fields = line.replace(",", " ").split()
            if len(fields) >= 4 and fields[1] == "RUNNING" and fields[2] == "pid" and fields[3].isdigit():
                names[int(fields[3])] = fields[0]
        return names

    def pids(self) -> dict[str, int]:
        """supervisord and every program under it, by supervisord's program name (nebula-agent,
        dht, router, api, gateway, svc-<name>): Envoy execs in place of `meshworker run
        gateway`, so its command line says `envoy`, not the program it is."""
        return {self.program_name(p, programs): p.pid
                for programs in [self.programs()] for p in procs.process_tree(self.proc.pid)}

    @staticmethod
    def program_name(process: procs.ProcessInfo, programs: dict[int, str]) -> str:
        # supervisorctl gives no pid while a program is STARTING (its first startsecs): then
        # the command line names it, and Envoy's is that of the gateway program.
        return programs.get(process.pid) or ("gateway" if process.name == "envoy" else process.name)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return (self.state_dir / "node.log").read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def __exit__(self, *exc) -> None:
        if self.proc:
            procs.stop(self.proc)
            self.proc = None
        shutil.rmtree(self.state_dir, ignore_errors=True)
