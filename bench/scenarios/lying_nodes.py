"""Scenario lying_nodes: provider lookups while 25 outsider nodes with ids next to the
service's key accept STOREs and keep nothing (issue 12 H2), then once they have left and
only their dead contacts remain in the members' routing tables.

Members, liars and readers are real Kademlia nodes (services.dht) on loopback UDP in this
process. The providers announce after the liars have joined, so the liars hold the k places
next to the key; the readers join after the announce, so they hold no copy of their own and
every lookup they make reads the DHT.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench import stats
from bench.context import Context
from bench.report import Row, ScenarioResult, Target
from services.dht import records
from services.dht.node import DhtNode, MeshProtocol, MeshServer, Signer
from services.dht.storage import ProviderStorage
from services.dht.unverified import UnverifiedPeers
from services.identity.node_key import NodeIdentity
from services.identity.trust import MeshTrust

NAME = "lying_nodes"
MEMBERS = 8
PROVIDERS = 2
READERS = 4
LIARS = 25
SERVICE = "echo"
ROUTER_DEADLINE_MS = 2000  # the router waits this long for FindProviders


class LyingProtocol(MeshProtocol):
    """The attacker's node (a test double, tests/unit/dht/test_lookup.py uses it too): it
    accepts every STORE and keeps nothing."""

    def rpc_store(self, sender, nodeid, key, value):
        return True


class LyingServer(MeshServer):
    def _create_protocol(self) -> LyingProtocol:
        return LyingProtocol(self.node, self.storage, self.ksize, self.unverified)


def member(name: str, trust: MeshTrust) -> DhtNode:
    key = Ed25519PrivateKey.generate()
    identity = NodeIdentity(key, key.public_key().public_bytes(serialization.Encoding.Raw,
                                                               serialization.PublicFormat.Raw))
    return DhtNode(name, 3600, Signer(identity, trust))


async def start_liars(seeds: list[tuple[str, int]]) -> list[LyingServer]:
    key = int.from_bytes(records.storage_key(SERVICE), "big")
    liars = []
    for i in range(1, LIARS + 1):
        liars.append(LyingServer(ProviderStorage(MeshTrust(os.urandom(24).hex())), (key ^ i).to_bytes(20, "big"),
                                 UnverifiedPeers()))
        await liars[-1].listen(0, "127.0.0.1")
        await liars[-1].bootstrap(seeds)
    return liars


async def lookups(readers: list[DhtNode], count: int, expected: set[str], rng: random.Random) -> dict:
    times, found = [], 0
    for _ in range(count):
        reader = rng.choice(readers)
        started = time.perf_counter()
        providers = await reader.find_providers(SERVICE)
        times.append((time.perf_counter() - started) * 1e3)
        found += expected <= {r["worker_id"] for r in providers}
    return {"lookups": count, "found_pct": 100 * found / count, "p50_ms": stats.percentile(times, 50),
            "p95_ms": stats.percentile(times, 95), "max_ms": max(times)}


async def measure(count: int, rng: random.Random) -> dict:
    trust = MeshTrust(os.urandom(24).hex())
    nodes: list[DhtNode] = []
    liars: list[LyingServer] = []
    try:
        for i in range(MEMBERS):
            nodes.append(member(f"member-{i}", trust))
            await nodes[-1].start("127.0.0.1", 0, [("127.0.0.1", nodes[0].port)] if i else [])
        seeds = [("127.0.0.1", n.port) for n in nodes[:2]]
        liars = await start_liars(seeds)
        stored_on = [(await n.announce(SERVICE, f"http://127.0.0.1:8000/{n.worker_id}"))[1] for n in nodes[:PROVIDERS]]
        readers = []
        for i in range(READERS):
            readers.append(member(f"reader-{i}", trust))
            nodes.append(readers[-1])
            await readers[-1].start("127.0.0.1", 0, seeds)
        expected = {n.worker_id for n in nodes[:PROVIDERS]}
        lying = await lookups(readers, count, expected, rng)
        for liar in liars:
            liar.stop()
        dead = await lookups(readers, count, expected, rng)
    finally:
        for node in [*nodes, *liars]:
            node.stop()
    return {"members": MEMBERS, "providers": PROVIDERS, "readers": READERS, "liars": LIARS,
            "stored_on": stored_on, "lying": lying, "dead": dead}


def run(ctx: Context) -> ScenarioResult:
    seed = random.randrange(2**32)
    raw = asyncio.run(measure(ctx.settings.swarm_lookups, random.Random(seed))) | {"seed": seed}
    for phase in ("lying", "dead"):
        figures = raw[phase]
        ctx.progress(f"{NAME}: {phase}: {figures['lookups']} lookups, {figures['found_pct']:.1f} % found every "
                     f"provider, p50 {figures['p50_ms']:.1f} ms, p95 {figures['p95_ms']:.1f} ms, "
                     f"max {figures['max_ms']:.1f} ms")
    return ScenarioResult(rows=summarize(raw), raw=raw)


def summarize(raw: dict) -> list[Row]:
    rows = [Row(f"nodes that keep a provider's record after its announce, of {MEMBERS} members and {LIARS} liars",
                stats.median(raw["stored_on"]))]
    for phase, where in (("lying", f"{LIARS} lying nodes next to the key"), ("dead", f"their {LIARS} dead contacts")):
        figures = raw[phase]
        rows += [
            Row(f"lookups that found every provider, {where} (%)", figures["found_pct"],
                target=Target(">=", 100, unit="%")),
            Row(f"lookup time p50, {where} (ms)", figures["p50_ms"]),
            Row(f"lookup time p95, {where} (ms)", figures["p95_ms"],
                target=Target("<", ROUTER_DEADLINE_MS, unit="ms")),
            Row(f"lookup time max, {where} (ms)", figures["max_ms"]),
        ]
    return rows
