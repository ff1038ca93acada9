"""The `meshworker` command: run a node, run one of its components, show its status.

This is the one place that reads os.environ, configures logging and calls asyncio.run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import shutil
import stat
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import TypeVar

import grpc
import uvloop
from prometheus_client import disable_created_metrics

from services.backends import registry
from services.backends.embeddings import engine as embeddings_engine
from services.backends.llm import engine as llm_engine
from services.common import config, grpcclient, identity, programs
from services.common.config import Config, ConfigError
from services.common.rpc import router_pb2, router_pb2_grpc
from services.common.statefile import StateError, write_atomically
from services.nebula import cli as nebula_cli
from services.nebula import supervise
from services.nebula.tokens import parse_duration
from services.router.announcer import ANNOUNCE_DEADLINE_S

log = logging.getLogger("meshworker")
SUPERVISORD_CONF = Path(__file__).resolve().parent.parent / "supervisord.conf"
T = TypeVar("T")


def configure_logging(component: str, level: str) -> None:
    # supervisord interleaves every program's output on one stdout: the prefix says whose.
    logging.basicConfig(
        level=level, stream=sys.stdout,
        format=f"{component:<16}| %(asctime)s %(levelname)s %(name)s - %(message)s")
    # rpcudp logs every unanswered datagram as an error; a peer that went away is routine
    # for a DHT (kademlia drops it), and /mesh/peers shows who answers.
    logging.getLogger("rpcudp.protocol").setLevel(logging.CRITICAL)


SECRET_VARIABLE = config.ENV_PREFIX + "MESH_SECRET"


def private_dir(path: Path) -> None:
    """Make `path` (and missing parents) a directory only this user can enter: the runtime
    dir holds the backends' and gRPC sockets, and a socket's own mode is not all that guards
    it. mkdir's mode does not apply to parents nor to a directory that exists, so an existing
    one of ours is tightened; one that others may enter and we do not own is refused."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.stat()
    if info.st_mode & 0o077 == 0:
        return
    if info.st_uid != os.getuid() or info.st_mode & stat.S_ISVTX:  # e.g. /tmp: shared, not ours to close
        raise StateError(f"{path} is open to other users (mode {info.st_mode & 0o7777:o}) and not a "
                         "directory of this node's own; point runtime_dir at one (it is made 0700)")
    path.chmod(0o700)


def prepare_runtime(cfg: Config) -> None:
    cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_dir(cfg.runtime_dir)
    programs_dir = cfg.runtime_dir / "programs"
    programs_dir.mkdir(exist_ok=True, mode=0o700)
    for stale in programs_dir.glob("*.conf"):
        stale.unlink()
    for name, text in programs.backend_programs(cfg.services).items():
        write_atomically(programs_dir / name, text.encode())
    nebula = supervise.nebula_program(cfg)  # None until the node is in an overlay
    if nebula is not None:
        write_atomically(programs_dir / "nebula.conf", nebula.encode())
    write_atomically(cfg.runtime_dir / "node.json", json.dumps({"started_at": time.time()}).encode())
    identity.NodeIdentity.load_or_create(cfg.state_dir)  # made once, before any program reads it


def ensure_mesh_secret(cfg: Config) -> Config:
    """A first start makes the mesh secret that nodes joining this mesh must be given."""
    if cfg.mesh_secret is not None:
        return cfg
    cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = cfg.state_dir / config.MESH_SECRET_FILE
    write_atomically(path, identity.new_mesh_secret().encode())
    print(f"new mesh: its secret is in {path}; nodes that join this mesh without an overlay "
          "need it as MESHWORKER_MESH_SECRET (with `meshworker join`, the CA vouches instead)", flush=True)
    return dataclasses.replace(cfg, mesh_secret=path.read_text())


def child_environment(cfg: Config, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment supervisord and every program under it get: this one, with the
    state and runtime dirs and config file fixed, and never the mesh secret. Backends (the
    user's own programs included) have no use for it, and an environment leaks easily (crash
    reports, `env` dumps, children of children). The components read it from
    <state>/mesh.secret (0600) instead, written here when it came from the variable."""
    env = {k: v for k, v in environ.items() if k != SECRET_VARIABLE}
    env.update(MESHWORKER_STATE_DIR=str(cfg.state_dir), MESHWORKER_RUNTIME_DIR=str(cfg.runtime_dir),
               PATH=os.path.dirname(sys.executable) + os.pathsep + environ.get("PATH", ""))
    if cfg.config_path:
        env["MESHWORKER_CONFIG"] = str(cfg.config_path)
    if environ.get(SECRET_VARIABLE) and cfg.mesh_secret is not None:
        write_atomically(cfg.state_dir / config.MESH_SECRET_FILE, cfg.mesh_secret.encode())
    if config.load(env, str(cfg.config_path) if cfg.config_path else None).mesh_secret != cfg.mesh_secret:
        # e.g. mesh_secret in the TOML file, which ranks above the file written here
        raise ConfigError("mesh_secret", f"{SECRET_VARIABLE} differs from mesh_secret in "
                          f"{cfg.config_path}; set one of them")
    return env


def up(cfg: Config) -> int:
    """Replace this process with supervisord, so SIGTERM and Ctrl-C reach it directly."""
    supervisord = shutil.which("supervisord", path=os.path.dirname(sys.executable)) \
        or shutil.which("supervisord")
    if supervisord is None:
        print("supervisord not found: pip install supervisor", file=sys.stderr)
        return 1
    cfg = ensure_mesh_secret(cfg)
    prepare_runtime(cfg)
    env = child_environment(cfg, os.environ)
    print(f"meshworker {version('meshworker')}: node {cfg.worker_id}, services "
          f"{[s.name for s in cfg.services]}, gateway (Envoy) {cfg.gateway_host}:{cfg.gateway_port}, peers "
          f"(mTLS) :{cfg.peer_port}", flush=True)
    for name, reason in cfg.unavailable:
        print(f"{name} is not offered: {reason}", flush=True)
    write_atomically(cfg.runtime_dir / "programs" / f"{PROGRESS_PROGRAM}.conf", progress_program().encode())
    os.execve(supervisord, ["supervisord", "-n", "-c", str(SUPERVISORD_CONF)], env)


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

    def gateway_address(self) -> tuple[str, int, int] | None:
        try:
            address = json.loads(self.cfg.gateway_address_file.read_text())
            return address["host"], int(address["port"]), int(address["peer_port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

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
        address = self.gateway_address()
        if address is None:
            return None
        host = "127.0.0.1" if address[0] in ("0.0.0.0", "::") else address[0]
        try:
            async with self.http.get(f"http://{host}:{address[1]}{path}") as reply:
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
        address = self.gateway_address()
        return NodeView(frozenset(ready), backends, status, address[1:] if address else None)


async def watch_progress(cfg: Config, out: Callable[[str], None]) -> int:
    """Print the node's start-up as it happens; 0 once it is healthy, 1 if it never was."""
    services = [s.name for s in cfg.services]
    models = model_files(services)
    started_at = node_started_at(cfg)
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
                host = (watcher.gateway_address() or (cfg.gateway_host,))[0]
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


def node_started_at(cfg: Config) -> float:
    try:
        return json.loads((cfg.runtime_dir / "node.json").read_text())["started_at"]
    except (OSError, ValueError, KeyError):
        return time.time()


def run_component(cfg: Config, component: str) -> int:
    if component == PROGRESS_PROGRAM:  # not a component: the start-up watcher (see `up`)
        return asyncio.run(watch_progress(cfg, lambda line: print(line, flush=True)))
    configure_logging(component, cfg.log_level)
    # /metrics concatenates every component: `_created` series would only add noise there.
    disable_created_metrics()
    if component == "gateway":
        from services.gateway.main import exec_envoy
        exec_envoy(cfg)  # returns only if the exec failed, which raises
    if component == "api":
        from services.api.main import serve as serve_api
        uvloop.run(serve_api(cfg, node_started_at(cfg)))
        return 0
    if component.startswith("svc-") and cfg.service(component[4:]) is not None:
        return run_backend(cfg, component[4:])
    servers = {"nebula-agent": "services.nebula.main", "dht": "services.dht.main",
               "router": "services.router.main"}
    if component not in servers:
        known = [*servers, "gateway", "api", *(s.program for s in cfg.services if s.command)]
        print(f"unknown component {component!r}; expected one of: {', '.join(known)}", file=sys.stderr)
        return 2
    module = __import__(servers[component], fromlist=["serve"])
    asyncio.run(module.serve(cfg))
    return 0


def run_backend(cfg: Config, name: str) -> int:
    if name not in config.BUILTIN_SERVICES:
        print(f"{name} is not a built-in service: give it a command in [service.{name}]", file=sys.stderr)
        return 2
    registry.serve(name, cfg.service(name).upstream.removeprefix("unix:"), cfg.log_level.lower())
    return 0


class NotRunning(Exception):
    pass


class Refused(Exception):
    """The node answered, and said why it would not do what was asked."""


def gateway_get(cfg: Config, path: str) -> dict:
    """GET a JSON document from this node's gateway (found through gateway.json)."""
    try:
        address = json.loads(cfg.gateway_address_file.read_text())
        host = "127.0.0.1" if address["host"] in ("0.0.0.0", "::") else address["host"]
        with urllib.request.urlopen(f"http://{host}:{address['port']}{path}", timeout=10) as reply:
            return json.load(reply)
    except urllib.error.HTTPError as err:
        return json.load(err)
    except (OSError, ValueError, KeyError) as err:
        raise NotRunning(f"node {cfg.worker_id} is not running (no gateway answers: {err})") from None


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    widths = [max(len(str(v)) for v in column) for column in zip(headers, *rows, strict=True)]
    for row in [headers, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def status(cfg: Config) -> int:
    health, stats = gateway_get(cfg, "/health"), gateway_get(cfg, "/stats")
    print(f"node {health['worker_id']}: {health['status']}  (up {health['uptime']:.0f} s, "
          f"version {health['version']}, dht peers {health['dht_peers']}, "
          f"overlay: {health['vpn_ip'] or health['vpn_reason']})\n")
    print_table(["COMPONENT", "STATE"], [[n, s] for n, s in health["components"].items()])
    print()
    print_table(["SERVICE", "STATE"], [[n, s] for n, s in health["backends"].items()]
                + [[n, reason] for n, reason in health["unavailable"].items()])
    print()
    print_table(["ROUTING", "COUNT"], [[n, f"{v:g}"] for n, v in stats["routing"].items()])
    return 0


def services(cfg: Config) -> int:
    rows = []
    for view in gateway_get(cfg, "/mesh/services")["services"]:
        for p in view["providers"]:
            rows.append([view["name"], p["worker_id"], "local" if p["local"] else "remote",
                         "healthy" if p["healthy"] else "unhealthy", p["url"],
                         f"{p['record_age_seconds']:.0f} s" if not p["local"] else "-"])
    print_table(["SERVICE", "WORKER", "WHERE", "HEALTH", "URL", "RECORD AGE"], rows)
    return 0


def peers(cfg: Config) -> int:
    view = gateway_get(cfg, "/mesh/peers")
    print_table(["NODE ID", "ADDRESS", "REACHABLE", "RTT"], [
        [p["node_id"][:16], p["address"], "yes" if p["reachable"] else "no",
         f"{p['rtt_seconds'] * 1000:.2f} ms" if p["reachable"] else "-"] for p in view["peers"]])
    if view.get("forwarding"):
        print("\nPeers this node forwards to, as Envoy saw them:")
        print_table(["SERVICE", "WORKER", "ADDRESS", "REACHED", "CONNECT FAILURES", "EJECTED"], [
            [p["service"], p["worker_id"], p["address"], {True: "yes", False: "no", None: "-"}[p["reachable"]],
             str(p["connect_failures"]), "yes" if p["ejected"] else "no"] for p in view["forwarding"]])
    if view.get("unverified"):
        print("\nRecords these peers sent could not be verified (another mesh's secret or CA?):")
        print_table(["ADDRESS", "CLAIMS WORKER", "RECORDS", "LAST SEEN"], [
            [u["address"], u["worker_id"], str(u["records"]), time.strftime("%H:%M:%S", time.localtime(u["last_seen"]))]
            for u in view["unverified"]])
    return 0


def router_call(cfg: Config, call: Callable[[router_pb2_grpc.RouterStub], Awaitable[T]]) -> T:
    """One call to this node's router (`call` gives its deadline); NotRunning when it does not answer."""
    async def run() -> T:
        async with grpcclient.channel(cfg, "router") as channel:
            return await call(router_pb2_grpc.RouterStub(channel))
    try:
        return asyncio.run(run())
    except grpc.aio.AioRpcError as err:
        if err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
            raise Refused(err.details()) from None
        raise NotRunning(f"the router of {cfg.worker_id} is not answering: {err.code().name}") from None


def models(cfg: Config) -> int:
    reply = router_call(cfg, lambda router: router.MeshModels(router_pb2.MeshModelsRequest(),
                                                              timeout=grpcclient.DEADLINE_S))
    print_table(["MODEL", "KIND", "CONTEXT", "WORKER", "WHERE", "SERVICE", "LOAD"], [
        [m.id, m.kind or "-", m.context_length or "-", p.worker_id, "local" if p.local else "remote",
         p.service or "-", f"{p.load_percent}%"] for m in reply.models for p in m.providers])
    aliases = [[alias, m.id] for m in reply.models for alias in m.aliases]
    if aliases:
        print("\nAliases ([models] aliases in this node's config):")
        print_table(["ALIAS", "MODEL"], aliases)
    return 0


def when(unix_s: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix_s)) if unix_s else "never"


def keys_create(cfg: Config, args: argparse.Namespace) -> int:
    request = router_pb2.CreateKeyRequest(name=args.name, requests_per_minute=args.rpm, tokens_per_minute=args.tpm,
                                          models=args.models, ttl_seconds=args.expires)
    reply = router_call(cfg, lambda router: router.CreateKey(request, timeout=grpcclient.DEADLINE_S + 2))
    print(f"API key {reply.key.name} ({reply.key.id}), expires {when(reply.key.expires_at)}:\n\n{reply.token}\n\n"
          "Shown once: the mesh keeps only what verifies it. Send it as 'Authorization: Bearer <key>' or\n"
          "'X-API-Key: <key>' (the openai SDK's api_key). Every node accepts it within 10 s.")
    return 0


def keys_list(cfg: Config, args: argparse.Namespace) -> int:
    reply = router_call(cfg, lambda router: router.ListKeys(router_pb2.ListKeysRequest(), timeout=grpcclient.DEADLINE_S))
    print_table(["NAME", "ID", "REQUESTS/MIN", "TOKENS/MIN", "MODELS", "EXPIRES", "CREATED", "THIS MINUTE",
                 "REQUESTS", "ERRORS", "TOKENS", "LAST USED"], [
        [k.name, k.id, k.requests_per_minute or "-", k.tokens_per_minute or "-", ",".join(k.models) or "all",
         when(k.expires_at), when(k.created_at), f"{u.minute_requests}/{u.minute_tokens}", u.requests, u.errors,
         u.prompt_tokens + u.completion_tokens, when(int(u.last_used_at))]
        for k, u in zip(reply.keys, reply.usage, strict=True)])
    print("\nTHIS MINUTE: requests/tokens over the mesh, counted against the limits. REQUESTS, ERRORS, TOKENS\n"
          "(prompt and completion) and LAST USED: on this node, since its router started.")
    return 0


def keys_revoke(cfg: Config, args: argparse.Namespace) -> int:
    reply = router_call(cfg, lambda router: router.RevokeKey(router_pb2.RevokeKeyRequest(name=args.name),
                                                             timeout=grpcclient.DEADLINE_S + 2))
    print(f"revoked {args.name} ({', '.join(k.id for k in reply.keys)}); every node refuses it within 10 s")
    return 0


def drain(cfg: Config) -> int:
    """Withdraw this node's services from the mesh; it keeps serving what reaches it."""
    reply = router_call(cfg, lambda router: router.Drain(
        router_pb2.DrainRequest(), timeout=ANNOUNCE_DEADLINE_S + grpcclient.DEADLINE_S))
    print(f"drained {cfg.worker_id}: withdrew {', '.join(reply.withdrawn) or 'nothing'}; "
          "restart the node to announce its services again")
    return 0


def duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_key_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="keys_command", required=True)
    create = commands.add_parser("create", help="make a key (printed once)")
    create.add_argument("--name", required=True, help="unique among the keys in force; usage is counted under it")
    create.add_argument("--rpm", type=int, default=0, help="requests per minute, mesh-wide (default: no limit)")
    create.add_argument("--tpm", type=int, default=0, help="tokens per minute, mesh-wide (default: no limit)")
    create.add_argument("--expires", type=duration, default=0, help="lifetime, e.g. 30d or 12h (default: never)")
    create.add_argument("--models", type=lambda text: [m.strip() for m in text.split(",") if m.strip()],
                        default=[], help="model ids or aliases it may use, comma-separated (default: all, "
                                         "and every /service route)")
    commands.add_parser("list", help="the keys in force (never a secret)")
    commands.add_parser("revoke", help="revoke a key on every node").add_argument("name")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="meshworker", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"meshworker {version('meshworker')}")
    parser.add_argument("--config", help="TOML config file (default: MESHWORKER_CONFIG, "
                                         "else <state dir>/meshworker.toml if it exists)")
    commands = parser.add_subparsers(dest="command", required=True)
    nebula_cli.add_commands(commands)
    commands.add_parser("up", help="run this node in the foreground under supervisord")
    commands.add_parser("status", help="components, services and routing counters of this node")
    commands.add_parser("services", help="every service of the mesh and its providers")
    commands.add_parser("peers", help="the DHT peers this node knows, with their round-trip time")
    commands.add_parser("models", help="every model of the mesh, the nodes that serve it and their load")
    commands.add_parser("drain", help="withdraw this node's services from the mesh")
    add_key_commands(commands.add_parser("keys", help="the mesh's client API keys: create, list, revoke"))
    run = commands.add_parser("run", help="run one component (what supervisord starts)")
    run.add_argument("component", help="nebula-agent, dht, router, api, gateway (Envoy) or svc-<name>")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = config.load(os.environ, args.config)
    except ConfigError as err:
        print(f"meshworker: {err}", file=sys.stderr)
        return 2
    if args.command in nebula_cli.COMMANDS:
        return nebula_cli.run(cfg, args)
    if args.command == "up":
        try:
            return up(cfg)
        except (StateError, ConfigError) as err:
            print(f"meshworker: {err}", file=sys.stderr)
            return 2
    if args.command == "run":
        return run_component(cfg, args.component)
    try:
        if args.command == "keys":
            return {"create": keys_create, "list": keys_list, "revoke": keys_revoke}[args.keys_command](cfg, args)
        return {"status": status, "services": services, "peers": peers, "models": models,
                "drain": drain}[args.command](cfg)
    except NotRunning as err:
        print(err, file=sys.stderr)
        return 1
    except Refused as err:
        print(f"meshworker: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
