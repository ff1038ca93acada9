"""What `meshworker up` prints while the node comes up: the `progress` program."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Mapping

import grpc

from services.backends.embeddings import engine as embeddings_engine
from services.backends.llm import engine as llm_engine
from services.common import config, grpcclient, runtime_files
from services.common.config import Config
from services.common.rpc import router_pb2, router_pb2_grpc

# Progress of `meshworker up`. Nothing of `up` runs after its exec, so the lines come from one
# more supervised program, `progress` (programs/progress.conf, written by `up` like a backend's),
# which watches the node come up, prints a line as each part becomes ready and exits once the
# node is healthy. A process forked before the exec would also leave supervisord as PID 1, but
# supervisord would not know it: it would not be stopped with the node (a Ctrl-C during start-up
# reaches it, a `docker stop` or systemd's stop does not) and its exit would be logged as an
# unknown pid. As a program it is started, stopped and reaped like every other, and its lines
# reach the terminal (or `docker logs`, or the journal) the way every program's do.
PROGRESS_PROGRAM = "progress"
PROGRESS_POLL_S = 0.5
PROGRESS_WAITING_S = 15.0  # a "still waiting for" line this often while something is not ready
PROGRESS_GIVE_UP_S = 1800.0
PROGRESS_COMPONENTS = (*config.COMPONENTS, "api", "gateway")


def progress_program() -> str:
    """The watcher's [program] section: first to start, never restarted, 0 is its one exit."""
    return (f"[program:{PROGRESS_PROGRAM}]\ncommand=meshworker run {PROGRESS_PROGRAM}\npriority=1\n"
            "autorestart=false\nstartsecs=0\nexitcodes=0\nstopasgroup=true\nkillasgroup=true\n"
            "stopwaitsecs=5\nredirect_stderr=true\nstdout_logfile=/dev/stdout\nstdout_logfile_maxbytes=0\n")


@dataclasses.dataclass(frozen=True)
class BackendView:
    name: str
    healthy: bool
    model: str = ""
    load_seconds: float = 0.0
    rss_bytes: int = 0
    last_error: str = ""


@dataclasses.dataclass(frozen=True)
class NodeView:
    """What the watcher saw of the node at one moment."""

    ready: frozenset[str] = frozenset()  # components that answer: PROGRESS_COMPONENTS
    backends: tuple[BackendView, ...] = ()  # as the router checks them; () until it answers
    status: str | None = None  # /health's status through the gateway; None: no answer yet
    ports: tuple[int, int] | None = None  # the client and peer listeners', once bound


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """A model a built-in backend loads: its name and the size of its files on disk."""

    model: str
    size_bytes: int


def size_text(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def stamp(elapsed: float, text: str) -> str:
    """One progress line: seconds since `up` started, then what happened."""
    return f"{PROGRESS_PROGRAM:<16}| [{elapsed:6.1f}s] {text}"


def model_files(services: list[str]) -> dict[str, ModelFile]:
    """The built-in model services among `services`, with their model files' sizes (what
    their packages hold); a service whose files cannot be found is left out."""
    found: dict[str, ModelFile] = {}
    try:
        if "llm-inference" in services:
            found["llm-inference"] = ModelFile(llm_engine.MODEL_NAME, llm_engine.gguf_path().stat().st_size)
    except (OSError, llm_engine.NotInstalled):
        pass
    try:
        if "rag-embeddings" in services:
            files = [p for p in embeddings_engine.model_dir().rglob("*") if p.is_file()]
            found["rag-embeddings"] = ModelFile(embeddings_engine.MODEL_NAME, sum(p.stat().st_size for p in files))
    except (OSError, embeddings_engine.NotInstalled):
        pass
    return found


def starting_lines(services: list[str], models: Mapping[str, ModelFile]) -> list[str]:
    lines = [f"starting {', '.join(c if c != 'gateway' else 'gateway (Envoy)' for c in PROGRESS_COMPONENTS)}"
             + (f"; services {', '.join(services)}" if services else "; no local service")]
    lines += [f"{name}: loading {m.model} ({size_text(m.size_bytes)})" for name, m in models.items()]
    return lines


def backend_ready_line(backend: BackendView, model: ModelFile | None) -> str:
    """e.g. "llm-inference ready: SmolLM2-135M-Instruct-Q4_1 loaded in 7.2 s (93.8 MiB file, 685.0 MiB
    resident)"; what the backend's health answer does not say is left out."""
    name = backend.model or (model.model if model else "")
    facts = [f"{size_text(model.size_bytes)} on disk"] if model else []
    if backend.rss_bytes:
        facts.append(f"{size_text(backend.rss_bytes)} resident")
    loaded = f" loaded in {backend.load_seconds:.1f} s" if backend.load_seconds else ""
    detail = f"{name}{loaded}" + (f" ({', '.join(facts)})" if facts else "")
    return f"{backend.name} ready" + (f": {detail}" if detail else "")


def progress_lines(before: NodeView, now: NodeView, models: Mapping[str, ModelFile]) -> list[str]:
    """What changed between two looks at the node, one line per change, in start-up order."""
    lines = []
    for component in PROGRESS_COMPONENTS:
        if component in now.ready and component not in before.ready:
            if component == "gateway" and now.ports:
                lines.append(f"gateway (Envoy) ready: clients on :{now.ports[0]}, peers (mTLS) on :{now.ports[1]}")
            else:
                lines.append(f"{component} ready")
        elif component in before.ready and component not in now.ready:
            lines.append(f"{component} stopped answering (supervisord restarts it)")
    was_healthy = {b.name for b in before.backends if b.healthy}
    for backend in now.backends:
        if backend.healthy and backend.name not in was_healthy:
            lines.append(backend_ready_line(backend, models.get(backend.name)))
    return lines


def waiting_line(now: NodeView, models: Mapping[str, ModelFile]) -> str:
    """What the node still waits for, e.g. "still waiting for router, llm-inference (loading
    SmolLM2-135M-Instruct-Q4_1, 93.8 MiB; health check answered HTTP 503)"."""
    pending = [c for c in PROGRESS_COMPONENTS if c not in now.ready]
    for backend in now.backends:
        if not backend.healthy:
            model = models.get(backend.name)
            why = [f"loading {model.model}, {size_text(model.size_bytes)}"] if model else []
            why += [backend.last_error] if backend.last_error else []
            pending.append(backend.name + (f" ({'; '.join(why)})" if why else ""))
    if pending:
        return f"still waiting for {', '.join(pending)}"
    return f"still waiting for the node to report healthy (it says {now.status or 'nothing yet'})"


def healthy_line(worker_id: str, host: str, port: int, page: bool) -> str:
    """The last line: the node is healthy, and where to look at it (the status page at / when
    the gateway serves one, else /health)."""
    shown = "localhost" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
    url = f"http://{shown}:{port}/" + ("" if page else "health")
    return f"node {worker_id} is healthy: open {url}"


class Watcher:
    """Looks at the node's parts: the gRPC components' health, the api's socket, Envoy's
    readiness, the router's view of the backends, and /health through the gateway."""

    def __init__(self, cfg: Config):
        # Imported here: aiohttp costs every other `meshworker` command a tenth of a second.
        import aiohttp

        from services.common.envoy_admin import EnvoyAdmin
        self.aiohttp = aiohttp
        self.cfg = cfg
        self.channels = {c: grpcclient.channel(cfg, c) for c in config.COMPONENTS}
        self.envoy = EnvoyAdmin(cfg.envoy_admin_socket)
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))

    async def close(self) -> None:
        await asyncio.gather(self.envoy.close(), self.http.close(), *(c.close() for c in self.channels.values()))

    async def api_answers(self) -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.cfg.api_socket)), 1.0)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    async def backends(self) -> tuple[BackendView, ...]:
        try:
            reply = await router_pb2_grpc.RouterStub(self.channels["router"]).ListLocalServices(
                router_pb2.ListLocalServicesRequest(), timeout=grpcclient.HEALTH_DEADLINE_S)
        except grpc.aio.AioRpcError:
            return ()
        return tuple(BackendView(s.name, s.healthy, s.model, s.load_seconds, s.rss_bytes, s.last_error)
                     for s in reply.services)

    async def get(self, path: str) -> tuple[int, bytes] | None:
        address = runtime_files.read_gateway(self.cfg)
        if address is None:
            return None
        try:
            async with self.http.get(address.local_url + path) as reply:
                return reply.status, await reply.read()
        except (self.aiohttp.ClientError, OSError, TimeoutError):
            return None

    async def status(self) -> str | None:
        answer = await self.get("/health")
        try:
            return json.loads(answer[1]).get("status") if answer else None
        except (ValueError, AttributeError):
            return None

    async def look(self) -> NodeView:
        states, api, envoy, backends, status = await asyncio.gather(
            asyncio.gather(*(grpcclient.health_status(c) for c in self.channels.values())),
            self.api_answers(), self.envoy.ready(), self.backends(), self.status())
        ready = {c for c, s in zip(self.channels, states, strict=True) if s == "SERVING"}
        ready |= {name for name, up in (("api", api), ("gateway", envoy)) if up}
        address = runtime_files.read_gateway(self.cfg)
        return NodeView(frozenset(ready), backends, status, (address.port, address.peer_port) if address else None)


async def watch_progress(cfg: Config, out: Callable[[str], None]) -> int:
    """Print the node's start-up as it happens; 0 once it is healthy, 1 if it never was."""
    services = [s.name for s in cfg.services]
    models = model_files(services)
    started_at = runtime_files.started_at(cfg)
    for line in starting_lines(services, models):
        out(stamp(time.time() - started_at, line))
    watcher = Watcher(cfg)
    before, next_waiting = NodeView(), PROGRESS_WAITING_S
    try:
        while True:
            now = await watcher.look()
            elapsed = time.time() - started_at
            for line in progress_lines(before, now, models):
                out(stamp(elapsed, line))
            if now.status == "healthy":
                page = await watcher.get("/")
                host = address.host if (address := runtime_files.read_gateway(cfg)) else cfg.gateway_host
                out(stamp(elapsed, healthy_line(cfg.worker_id, host, now.ports[0] if now.ports else cfg.gateway_port,
                                                page is not None and page[0] == 200)))
                return 0
            if elapsed >= PROGRESS_GIVE_UP_S:
                out(stamp(elapsed, f"not healthy after {elapsed:.0f} s; `meshworker status` shows what is down"))
                return 1
            if elapsed >= next_waiting:
                out(stamp(elapsed, waiting_line(now, models)))
                next_waiting = elapsed + PROGRESS_WAITING_S
            before = now
            await asyncio.sleep(PROGRESS_POLL_S)
    finally:
        await watcher.close()
