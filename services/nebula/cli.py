"""`meshworker init | token | join | revoke`: create a mesh, admit nodes, remove them.

Hooked into services/cli.py by `add_commands(subparsers)` and `run(cfg, args)`. Each
command changes the state directory, then asks the running node's nebula-agent to apply
it (gRPC Reload); when no node runs, the next `meshworker up` applies it.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import subprocess
import sys
import time

import grpc

from services.common.config import Config
from services.common.rpc import nebula_pb2, nebula_pb2_grpc
from services.nebula import bootstrap, client
from services.nebula.authority import holder, tokens
from services.nebula.overlay import membership
from services.nebula.overlay.state import EnrollmentError, NebulaPaths, StateError

COMMANDS = ("init", "token", "join", "revoke")
RPC_TIMEOUT_S = 20.0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    init = subparsers.add_parser("init", help="start a new mesh on this node: CA, lighthouse, join token")
    init.add_argument("--network", default="10.42.0.0/16", help="overlay network (default 10.42.0.0/16)")
    init.add_argument("--advertise", help="underlay address(es) other nodes reach this one on, "
                      "comma-separated (default: this host's global IPv4 addresses)")
    init.add_argument("--enroll-port", type=int, help="TCP port of the enrollment endpoint "
                      "(default: the Nebula port + 1, i.e. 4243)")
    init.add_argument("--sync-interval", default="30s", help="how often members fetch the mesh "
                      "record (blocklist, lighthouses); default 30s")
    init.add_argument("--ca-duration", default="8760h", help="CA lifetime, nebula-cert form (default 8760h)")
    _token_options(init, "--token-ttl", "--token-uses")
    token = subparsers.add_parser("token", help="issue a join token (on the node that ran init)")
    _token_options(token, "--ttl", "--uses")
    token.add_argument("--groups", default="", help="comma-separated Nebula groups for the joiner")
    token.add_argument("--lighthouse", action="store_true", help="let the joiner become a lighthouse")
    join = subparsers.add_parser("join", help="enroll this node in a mesh (the command init printed)")
    join.add_argument("address", help="the lighthouse's enrollment host:port (comma-separated for several)")
    join.add_argument("--token", required=True)
    join.add_argument("--ca-fingerprint", required=True, help="SHA-256 of the mesh's Nebula CA (pinned)")
    join.add_argument("--tls-fingerprint", required=True, help="SHA-256 of the endpoint's TLS cert (pinned)")
    join.add_argument("--name", help="this node's name in the mesh (default: its worker id)")
    join.add_argument("--lighthouse", action="store_true", help="become an extra lighthouse (the token "
                      "must allow it)")
    join.add_argument("--advertise", help="with --lighthouse: underlay address(es) nodes reach this one on")
    revoke = subparsers.add_parser("revoke", help="remove a node: block its certificates mesh-wide "
                                   "(Nebula's and the mesh TLS one)")
    revoke.add_argument("name")


def _token_options(parser: argparse.ArgumentParser, ttl: str, uses: str) -> None:
    parser.add_argument(ttl, default="1h", help="how long the token is valid (default 1h)")
    parser.add_argument(uses, type=int, default=1, help="how many joins it admits (default 1)")


def run(cfg: Config, args: argparse.Namespace) -> int:
    handlers = {"init": init, "token": token, "join": join, "revoke": revoke}
    try:
        return handlers[args.command](cfg, args)
    except (StateError, EnrollmentError, client.JoinError, RuntimeError, ValueError, LookupError) as err:
        print(f"meshworker {args.command}: {err}", file=sys.stderr)
        return 1


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def global_ipv4(ip_json: str, exclude: str | None = None) -> list[str]:
    """Global IPv4 addresses from `ip -j -4 addr show scope global`, minus the overlay's (pure)."""
    network = ipaddress.ip_network(exclude) if exclude else None
    found = []
    for link in json.loads(ip_json or "[]"):
        for info in link.get("addr_info", []):
            address = info.get("local")
            if address and not (network and ipaddress.ip_address(address) in network):
                found.append(address)
    return found


def detect_addresses(network: str) -> list[str]:
    out = subprocess.run(["ip", "-j", "-4", "addr", "show", "scope", "global"], capture_output=True,
                         text=True, timeout=10, check=False)
    found = global_ipv4(out.stdout, network) if out.returncode == 0 else []
    if not found:
        raise ValueError("could not find this host's underlay address; give it with --advertise")
    return found


def join_command(member: membership.Membership, token_text: str) -> str:
    return (f"meshworker join {','.join(member.enroll_addresses)} --token {token_text} "
            f"--ca-fingerprint {member.ca_fingerprint} --tls-fingerprint {member.tls_sha256}")


def init(cfg: Config, args: argparse.Namespace) -> int:
    if not cfg.nebula_port:
        raise ValueError("a lighthouse needs a fixed Nebula port: set nebula_port (MESHWORKER_NEBULA_PORT)")
    advertise = tuple(_split(args.advertise)) or tuple(detect_addresses(args.network))
    opts = bootstrap.InitOptions(
        name=cfg.worker_id, network=args.network, advertise=advertise, nebula_port=cfg.nebula_port,
        enroll_port=args.enroll_port or cfg.nebula_port + 1,
        sync_interval_s=tokens.parse_duration(args.sync_interval), ca_duration=args.ca_duration)
    member = bootstrap.init_mesh(cfg.state_dir, opts)
    paths = NebulaPaths.of(cfg.state_dir)
    text = holder.issue_token(paths, tokens.parse_duration(args.token_ttl), args.token_uses, [], False,
                                 time.time())
    print(f"Created mesh {member.network}: this node ({member.name}) is its CA holder and lighthouse "
          f"at {member.overlay_ip}.\nCA fingerprint: {member.ca_fingerprint}")
    print(_overlay_line(cfg, wait=True))
    uses = f"{args.token_uses} use{'s' if args.token_uses != 1 else ''}"
    print(f"\nOn each other machine, run (token valid {args.token_ttl}, {uses}):\n")
    print(f"  {join_command(member, text)}")
    return 0


def token(cfg: Config, args: argparse.Namespace) -> int:
    paths = NebulaPaths.of(cfg.state_dir)
    member = membership.load(paths)
    if member is None or not paths.is_authority():
        raise ValueError("tokens are issued on the node that ran `meshworker init` (it holds the CA)")
    text = holder.issue_token(paths, tokens.parse_duration(args.ttl), args.uses, _split(args.groups),
                                 args.lighthouse, time.time())
    print(join_command(member, text) + (" --lighthouse --advertise HOST" if args.lighthouse else ""))
    return 0


def short(fingerprint: str) -> str:
    return fingerprint[:8] + "…" if len(fingerprint) > 8 else fingerprint


def join_steps(opts: bootstrap.JoinOptions) -> tuple[str, str]:
    """What `join` is about to do, printed before each step: the enrollment's round trips and
    the wait for the overlay take seconds, and a failure then reads against its step."""
    role = " (lighthouse)" if opts.lighthouse else ""
    enroll = (f"[1/2] Enrolling as {opts.name}{role} through {', '.join(opts.addresses)}: checking its TLS "
              f"certificate ({short(opts.tls_sha256)}) and the mesh CA ({short(opts.ca_fingerprint)}) before "
              "the token is sent, making this node's key pair here (the private key stays), asking for "
              "a certificate")
    overlay = f"[2/2] Starting the overlay on this machine's node (nebula-agent; up to {RPC_TIMEOUT_S:.0f} s)"
    return enroll, overlay


def join(cfg: Config, args: argparse.Namespace) -> int:
    if args.lighthouse and not args.advertise:
        raise ValueError("--lighthouse needs --advertise HOST (the underlay address nodes reach it on)")
    opts = bootstrap.JoinOptions(
        addresses=tuple(_split(args.address)), token=args.token, ca_fingerprint=args.ca_fingerprint,
        tls_sha256=args.tls_fingerprint, name=args.name or cfg.worker_id, lighthouse=args.lighthouse,
        advertise=tuple(f"{h}:{cfg.nebula_port}" for h in _split(args.advertise)))
    enroll, overlay = join_steps(opts)
    print(enroll, flush=True)
    started = time.monotonic()
    member = bootstrap.join_mesh(cfg.state_dir, opts)
    role = "lighthouse" if member.lighthouse else "member"
    print(f"      enrolled in {time.monotonic() - started:.1f} s; state in {NebulaPaths.of(cfg.state_dir).root}")
    print(f"Joined mesh {member.network} as {member.name} ({role}), overlay address {member.overlay_ip}.")
    print(overlay, flush=True)
    started = time.monotonic()
    line = _overlay_line(cfg, wait=True)
    print(line + (f" ({time.monotonic() - started:.1f} s)" if line.startswith("Overlay up") else ""))
    return 0


def revoke(cfg: Config, args: argparse.Namespace) -> int:
    paths = NebulaPaths.of(cfg.state_dir)
    if not paths.is_authority():
        raise ValueError("revoke runs on the node that ran `meshworker init` (it holds the CA)")
    fingerprint, record = holder.revoke(paths, args.name, time.time())
    print(f"Revoked {args.name} (certificate {fingerprint}); mesh record {record.serial} blocks it.")
    applied = _reload(cfg, wait=False)
    here = "applied on this node" if applied is not None else "applied here at the next `meshworker up`"
    blocks = "Blocklist and TLS revocation list" if record.tls_crl else "Blocklist"
    print(f"{blocks} {here}; every member takes record {record.serial} within "
          f"{record.sync_interval_s} s.")
    return 0


def _reload(cfg: Config, wait: bool) -> nebula_pb2.StatusResponse | None:
    """Tell the running agent to apply the state (None: no node runs); wait for the overlay if asked."""
    with grpc.insecure_channel(cfg.grpc_target("nebula-agent")) as channel:
        stub = nebula_pb2_grpc.NebulaAgentStub(channel)
        try:
            status = stub.Reload(nebula_pb2.ReloadRequest(), timeout=RPC_TIMEOUT_S).status
            deadline = time.monotonic() + (RPC_TIMEOUT_S if wait else 0)
            while wait and not status.overlay_ip and time.monotonic() < deadline:
                time.sleep(0.2)
                status = stub.Status(nebula_pb2.StatusRequest(), timeout=RPC_TIMEOUT_S)
        except grpc.RpcError:
            return None
    return status


def _overlay_line(cfg: Config, wait: bool) -> str:
    status = _reload(cfg, wait)
    if status is None:
        return "The node is not running here: `meshworker up` starts nebula with this state."
    if status.overlay_ip:
        return f"Overlay up: {status.overlay_ip} on {status.network}."
    return f"Overlay not up yet: {status.reason}"
