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
import sys
import time
import urllib.error
import urllib.request
from importlib.metadata import version
from pathlib import Path

import uvloop
from prometheus_client import disable_created_metrics

from services.common import config, identity, programs
from services.common.config import Config, ConfigError
from services.common.statefile import write_atomically

log = logging.getLogger("meshworker")
SUPERVISORD_CONF = Path(__file__).resolve().parent.parent / "supervisord.conf"


def configure_logging(component: str, level: str) -> None:
    # supervisord interleaves every program's output on one stdout: the prefix says whose.
    logging.basicConfig(
        level=level, stream=sys.stdout,
        format=f"{component:<16}| %(asctime)s %(levelname)s %(name)s - %(message)s")


def prepare_runtime(cfg: Config) -> None:
    cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    programs_dir = cfg.runtime_dir / "programs"
    programs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in programs_dir.glob("*.conf"):
        stale.unlink()
    for name, text in programs.backend_programs(cfg.services).items():
        write_atomically(programs_dir / name, text.encode())
    write_atomically(cfg.runtime_dir / "node.json", json.dumps({"started_at": time.time()}).encode())
    identity.NodeIdentity.load_or_create(cfg.state_dir)  # made once, before any program reads it


def ensure_mesh_secret(cfg: Config) -> Config:
    """A first start makes the mesh secret that nodes joining this mesh must be given."""
    if cfg.mesh_secret is not None:
        return cfg
    cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = cfg.state_dir / config.MESH_SECRET_FILE
    write_atomically(path, identity.new_mesh_secret().encode())
    print(f"new mesh: its secret is in {path}; nodes that join this mesh need it as "
          "MESHWORKER_MESH_SECRET", flush=True)
    return dataclasses.replace(cfg, mesh_secret=path.read_text())


def up(cfg: Config) -> int:
    """Replace this process with supervisord, so SIGTERM and Ctrl-C reach it directly."""
    supervisord = shutil.which("supervisord", path=os.path.dirname(sys.executable)) \
        or shutil.which("supervisord")
    if supervisord is None:
        print("supervisord not found: pip install supervisor", file=sys.stderr)
        return 1
    cfg = ensure_mesh_secret(cfg)
    prepare_runtime(cfg)
    env = dict(os.environ, MESHWORKER_STATE_DIR=str(cfg.state_dir),
               MESHWORKER_RUNTIME_DIR=str(cfg.runtime_dir),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if cfg.config_path:
        env["MESHWORKER_CONFIG"] = str(cfg.config_path)
    print(f"meshworker {version('meshworker')}: node {cfg.worker_id}, services "
          f"{[s.name for s in cfg.services]}, gateway {cfg.gateway_host}:{cfg.gateway_port}", flush=True)
    os.execve(supervisord, ["supervisord", "-n", "-c", str(SUPERVISORD_CONF)], env)


def node_started_at(cfg: Config) -> float:
    try:
        return json.loads((cfg.runtime_dir / "node.json").read_text())["started_at"]
    except (OSError, ValueError, KeyError):
        return time.time()


def run_component(cfg: Config, component: str) -> int:
    configure_logging(component, cfg.log_level)
    # /metrics concatenates every component: `_created` series would only add noise there.
    disable_created_metrics()
    if component == "gateway":
        from services.gateway import main as gateway
        # uvloop: the gateway is the data path, and it roughly doubles what one core proxies.
        uvloop.run(gateway.serve(cfg, node_started_at(cfg)))
        return 0
    if component.startswith("svc-") and cfg.service(component[4:]) is not None:
        return run_backend(cfg, component[4:])
    servers = {"nebula-agent": "services.nebula.main", "dht": "services.dht.main",
               "router": "services.router.main"}
    if component not in servers:
        known = [*servers, "gateway", *(s.program for s in cfg.services if s.command)]
        print(f"unknown component {component!r}; expected one of: {', '.join(known)}", file=sys.stderr)
        return 2
    module = __import__(servers[component], fromlist=["serve"])
    asyncio.run(module.serve(cfg))
    return 0


def run_backend(cfg: Config, name: str) -> int:
    if name == "vision-ocr":
        from services.backends.ocr import main as ocr
        ocr.serve(cfg.service(name).upstream.removeprefix("unix:"), cfg.log_level.lower())
        return 0
    print(f"{name} is not a built-in service: give it a command in [service.{name}]", file=sys.stderr)
    return 2


def fetch(base: str, path: str) -> dict:
    try:
        with urllib.request.urlopen(base + path, timeout=5) as reply:
            return json.load(reply)
    except urllib.error.HTTPError as err:
        return json.load(err)


def status(cfg: Config) -> int:
    try:
        address = json.loads(cfg.gateway_address_file.read_text())
        host = "127.0.0.1" if address["host"] in ("0.0.0.0", "::") else address["host"]
        base = f"http://{host}:{address['port']}"
        health, stats = fetch(base, "/health"), fetch(base, "/stats")
    except (OSError, ValueError) as err:
        print(f"node {cfg.worker_id} is not running (no gateway answers: {err})", file=sys.stderr)
        return 1
    print(f"node {health['worker_id']}: {health['status']}  (up {health['uptime']:.0f} s, "
          f"version {health['version']}, overlay: {health['vpn_ip'] or health['vpn_reason']})\n")
    print(f"{'COMPONENT':<16}STATE")
    for name, state in health["components"].items():
        print(f"{name:<16}{state}")
    print(f"\n{'SERVICE':<16}STATE")
    for name, state in health["backends"].items():
        print(f"{name:<16}{state}")
    print(f"\n{'ROUTING':<20}COUNT")
    for name, value in stats["routing"].items():
        print(f"{name:<20}{value:g}" if isinstance(value, float) else f"{name:<20}{value}")
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="meshworker", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"meshworker {version('meshworker')}")
    parser.add_argument("--config", help="TOML config file (default: MESHWORKER_CONFIG, "
                                         "else <state dir>/meshworker.toml if it exists)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="run this node in the foreground under supervisord")
    commands.add_parser("status", help="components, services and routing counters of this node")
    run = commands.add_parser("run", help="run one component (what supervisord starts)")
    run.add_argument("component", help="nebula-agent, dht, router, gateway or svc-<name>")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = config.load(os.environ, args.config)
    except ConfigError as err:
        print(f"meshworker: {err}", file=sys.stderr)
        return 2
    if args.command == "up":
        return up(cfg)
    if args.command == "status":
        return status(cfg)
    return run_component(cfg, args.component)


if __name__ == "__main__":
    sys.exit(main())
