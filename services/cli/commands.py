"""The commands that ask a running node: status, services, peers, models, keys, drain."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from services.common import grpcclient, runtime_files
from services.common.config import Config
from services.common.rpc import router_pb2, router_pb2_grpc
from services.router.announcer import ANNOUNCE_DEADLINE_S

T = TypeVar("T")


class NotRunning(Exception):
    pass


class Refused(Exception):
    """The node answered, and said why it would not do what was asked."""


def gateway_get(cfg: Config, path: str) -> dict:
    """GET a JSON document from this node's gateway (found through gateway.json)."""
    address = runtime_files.read_gateway(cfg)
    if address is None:
        raise NotRunning(f"node {cfg.worker_id} is not running (no {runtime_files.gateway_path(cfg)})")
    try:
        with urllib.request.urlopen(address.local_url + path, timeout=10) as reply:
            return json.load(reply)
    except urllib.error.HTTPError as err:
        return json.load(err)
    except (OSError, ValueError) as err:
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

