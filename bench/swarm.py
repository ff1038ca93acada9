"""A swarm of meshworker Kademlia nodes (services.dht.node.DhtNode) on loopback UDP, spread
over a few shard processes, so a lookup's RPCs really cross processes as they would hosts.

The harness side (Swarm) starts the shards, bootstraps the nodes in stages from a few
seeds, has a handful of nodes announce services, and runs lookups from random nodes. The
shard side (`python -m bench.swarm`, reading one JSON command per stdin line and answering
one JSON line on stdout) holds the nodes and times each lookup where it runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench import procs
from bench.targets import REPO
from services.dht.node import DhtNode, Signer
from services.identity.node_key import NodeIdentity
from services.identity.trust import MeshTrust

SECRET_ENV = "BENCH_SWARM_SECRET"
SEEDS = 5                # the first nodes: everyone else bootstraps from a few of them
SEEDS_PER_NODE = 2
START_BATCH = 10         # nodes of one shard bootstrapping at once
REPLY_DEADLINE_S = 120
RECORD_TTL_S = 3600      # no record may expire while the swarm is measured


# ---- shard side: runs in each `python -m bench.swarm` process ----------------------------------

class Shard:
    def __init__(self, index: int, secret: str):
        self.index, self.trust = index, MeshTrust(secret)
        self.nodes: list[DhtNode] = []
        self.rng = random.Random(index)

    def new_node(self) -> DhtNode:
        key = Ed25519PrivateKey.generate()
        identity = NodeIdentity(key, key.public_key().public_bytes(serialization.Encoding.Raw,
                                                                   serialization.PublicFormat.Raw))
        worker = f"swarm-{self.index}-{len(self.nodes)}"
        node = DhtNode(worker, RECORD_TTL_S, Signer(identity, self.trust))
        self.nodes.append(node)
        return node

    async def start(self, count: int, seeds: list[list]) -> dict:
        async def one() -> None:
            chosen = self.rng.sample(seeds, min(SEEDS_PER_NODE, len(seeds)))
            await self.new_node().start("127.0.0.1", 0, [tuple(s) for s in chosen])

        for first in range(0, count, START_BATCH):
            await asyncio.gather(*(one() for _ in range(min(START_BATCH, count - first))))
        return {"nodes": [[n.worker_id, n.port] for n in self.nodes]}

    async def announce(self, node: int, service: str) -> dict:
        _, stored = await self.nodes[node].announce(service, f"http://127.0.0.1:8000/{self.nodes[node].worker_id}")
        return {"stored_on": stored}

    async def lookups(self, items: list[list]) -> dict:
        results = []
        for node, service in items:
            started = time.perf_counter()
            found = await self.nodes[node].find_providers(service)
            results.append([(time.perf_counter() - started) * 1e3, [r["worker_id"] for r in found]])
        return {"results": results}

    async def handle(self, command: dict) -> dict:
        op = command.pop("op")
        return await getattr(self, op)(**command)


async def serve(index: int) -> None:
    shard = Shard(index, os.environ[SECRET_ENV])
    loop = asyncio.get_running_loop()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            reply = await shard.handle(json.loads(line))
            print(json.dumps(reply), flush=True)
    finally:
        for node in shard.nodes:
            node.stop()


# ---- harness side -------------------------------------------------------------------------------

class Swarm:
    """`size` nodes over `shards` processes; nodes are addressed by their global index."""

    def __init__(self, workdir: Path, size: int, shards: int, rng: random.Random):
        self.workdir, self.size, self.rng = workdir, size, rng
        self.shard_count = max(1, min(shards, size))
        self.procs: list[subprocess.Popen] = []
        self.nodes: list[tuple[int, int, str]] = []  # (shard, index in shard, worker id)
        self.bootstrap_s = 0.0

    def __enter__(self) -> Self:
        env = dict(os.environ, **{SECRET_ENV: os.urandom(24).hex()})
        try:
            for i in range(self.shard_count):
                self.procs.append(procs.spawn([sys.executable, "-m", "bench.swarm", str(i)],
                                              self.workdir / f"swarm-{self.size}-{i}.log", env=env,
                                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO))
            started = time.perf_counter()
            self.bootstrap()
            self.bootstrap_s = time.perf_counter() - started
        except BaseException:
            self.__exit__()
            raise
        return self

    def send(self, shard: int, op: str, **args) -> None:
        self.procs[shard].stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        self.procs[shard].stdin.flush()

    def receive(self, shard: int) -> dict:
        return json.loads(procs.read_first_line(self.procs[shard], REPLY_DEADLINE_S))

    def call(self, shard: int, op: str, **args) -> dict:
        self.send(shard, op, **args)
        return self.receive(shard)

    def bootstrap(self) -> None:
        """One seed alone; then the other seeds from it; then every shard's share at once,
        each node from a couple of random seeds, START_BATCH at a time per shard."""
        first = self.call(0, "start", count=1, seeds=[])["nodes"]
        seeds = [["127.0.0.1", first[0][1]]]
        more = min(SEEDS, self.size) - 1
        if more:
            seeds += [["127.0.0.1", port] for _, port in self.call(0, "start", count=more, seeds=seeds)["nodes"][1:]]
        rest = self.size - len(seeds)
        shares = [rest // self.shard_count + (1 if i < rest % self.shard_count else 0)
                  for i in range(self.shard_count)]
        for shard, share in enumerate(shares):
            if share:
                self.send(shard, "start", count=share, seeds=seeds)
        for shard, share in enumerate(shares):
            nodes = self.receive(shard)["nodes"] if share else self.call(shard, "start", count=0, seeds=seeds)["nodes"]
            self.nodes += [(shard, i, worker) for i, (worker, _) in enumerate(nodes)]

    def announce(self, node: int, service: str) -> int:
        shard, local, _ = self.nodes[node]
        return self.call(shard, "announce", node=local, service=service)["stored_on"]

    def lookups(self, plan: list[tuple[int, str]]) -> list[tuple[float, list[str]]]:
        """Lookups one at a time (a shard's in a row, then the next shard's): each is timed
        on an otherwise idle swarm. Returns (ms, workers found) in plan order."""
        by_shard: dict[int, list[int]] = {}
        for position, (node, _) in enumerate(plan):
            by_shard.setdefault(self.nodes[node][0], []).append(position)
        results: list = [None] * len(plan)
        for shard, positions in by_shard.items():
            items = [[self.nodes[plan[p][0]][1], plan[p][1]] for p in positions]
            for position, result in zip(positions, self.call(shard, "lookups", items=items)["results"], strict=True):
                results[position] = tuple(result)
        return results

    def worker(self, node: int) -> str:
        return self.nodes[node][2]

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            if proc.stdin:
                proc.stdin.close()  # end of commands: the shard stops its nodes and exits
        for proc in self.procs:
            procs.stop(proc, grace_s=5)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
