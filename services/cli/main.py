"""The `meshworker` command: run a node, run one of its components, show its status.

This is the one place that reads os.environ, configures logging and calls asyncio.run.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import version

from services.backends import registry
from services.cli import commands
from services.cli.node import run_component, up
from services.common import config
from services.common.config import ConfigError
from services.common.statefile import StateError
from services.nebula import cli as nebula_cli
from services.nebula.authority.tokens import parse_duration


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
        cfg = registry.offered(config.load(os.environ, args.config))
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
            return {"create": commands.keys_create, "list": commands.keys_list,
                    "revoke": commands.keys_revoke}[args.keys_command](cfg, args)
        return {"status": commands.status, "services": commands.services, "peers": commands.peers,
                "models": commands.models, "drain": commands.drain}[args.command](cfg)
    except commands.NotRunning as err:
        print(err, file=sys.stderr)
        return 1
    except commands.Refused as err:
        print(f"meshworker: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
