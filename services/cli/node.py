"""Running a node: `meshworker up` (supervisord with this node's programs) and `meshworker run`
(one of them)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import stat
import sys
import time
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path

import uvloop
from prometheus_client import disable_created_metrics

from services.backends import registry
from services.cli.progress import PROGRESS_PROGRAM, progress_program, watch_progress
from services.common import config, programs, runtime_files
from services.common.config import Config, ConfigError
from services.common.statefile import StateError, write_atomically
from services.identity.node_key import NodeIdentity
from services.identity.trust import new_mesh_secret
from services.nebula.agent import supervise


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
    runtime_files.write_started(cfg, time.time())
    NodeIdentity.load_or_create(cfg.state_dir)  # made once, before any program reads it


def ensure_mesh_secret(cfg: Config) -> Config:
    """A first start makes the mesh secret that nodes joining this mesh must be given."""
    if cfg.mesh_secret is not None:
        return cfg
    cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = cfg.state_dir / config.MESH_SECRET_FILE
    write_atomically(path, new_mesh_secret().encode())
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
    os.execve(supervisord, ["supervisord", "-n", "-c", str(programs.SUPERVISORD_CONF)], env)



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
        uvloop.run(serve_api(cfg, runtime_files.started_at(cfg)))
        return 0
    if component.startswith("svc-") and cfg.service(component[4:]) is not None:
        return run_backend(cfg, component[4:])
    servers = {"nebula-agent": "services.nebula.agent.main", "dht": "services.dht.main",
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
