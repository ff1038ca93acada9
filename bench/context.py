"""What a scenario gets: the run settings, progress output, and processes it can share.

The backend, the baseline proxies, the node and the two-node mesh are started on first use
and stopped once, at the end, by the ExitStack the harness closes in its `finally`.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.mesh import Mesh
from bench.proxies import Envoy, EnvoyChain, HAProxy, Nginx
from bench.targets import SERVICE, Backend, Hosted, Node, ServerProcess

COLD_SERVICE = "bench-cold-{}"  # same backend, names the forwarding node has never asked for
# The baselines, by route name; envoy_chain: two bare Envoys with mTLS between them.
PROXIES = {"nginx": Nginx, "haproxy": HAProxy, "envoy": Envoy, "envoy_chain": EnvoyChain}


@dataclass(frozen=True)
class Settings:
    mode: str
    runs: int               # repetitions; every figure is a median over them
    latency_requests: int   # sequential requests per latency sample
    latency_warmup: int
    latency_budget_s: float  # per route and run: a pathologically slow route stops early
    wrk_seconds: float
    upload_mib: int
    footprint_runs: int     # fresh node starts timed from `up` to healthy
    cold_lookups: int       # services first requested on the forwarding node (one DHT lookup each)
    swarm_sizes: tuple[int, ...]  # kademlia swarms measured, in nodes
    swarm_lookups: int      # provider lookups per swarm, from random nodes
    failover_runs: int      # rounds of kills under load (bench.scenarios.failover names the programs)
    failover_settle_s: float  # load before each kill
    failover_after_s: float   # load after each kill, at the least
    failover_recovery_s: float  # the most a phase waits for its recovery (a provider node killed never does)
    embed_requests: int     # models: batch-1 embeddings requests per route, API and run
    embed_batches: int      # models: batch-32 embeddings requests per route, API and run
    ocr_lines: int          # models: lines of text on the page OCR reads (one page per route and run)
    llm_streams: int        # models: streamed completions per route and run (their median counts)
    llm_max_tokens: int     # models: tokens each streamed completion asks for
    llm_first_tokens: int   # models: one-token streams per route and run, for the time to first token
    model_requests: int     # openai: sequential chat requests per share measured (idle, one provider busy)
    model_joins: int        # openai: provider nodes started one after another with a new model each


SETTINGS = {
    "full": Settings("full", runs=5, latency_requests=2000, latency_warmup=200, latency_budget_s=8,
                     wrk_seconds=5, upload_mib=10, footprint_runs=3, cold_lookups=20, swarm_sizes=(50, 200),
                     swarm_lookups=300, failover_runs=3, failover_settle_s=2, failover_after_s=5,
                     failover_recovery_s=30,
                     embed_requests=30, embed_batches=8, ocr_lines=20, llm_streams=3, llm_max_tokens=32, llm_first_tokens=30,
                     model_requests=60, model_joins=3),
    "quick": Settings("quick", runs=2, latency_requests=300, latency_warmup=50, latency_budget_s=3,
                      wrk_seconds=2, upload_mib=10, footprint_runs=1, cold_lookups=8, swarm_sizes=(50,),
                      swarm_lookups=100, failover_runs=1, failover_settle_s=1.5, failover_after_s=3,
                      failover_recovery_s=20,
                      embed_requests=10, embed_batches=2, ocr_lines=20, llm_streams=3, llm_max_tokens=12, llm_first_tokens=15,
                      model_requests=30, model_joins=2),
    # Only proves the harness works end to end (the test runs it): its figures mean nothing.
    "smoke": Settings("smoke", runs=1, latency_requests=20, latency_warmup=5, latency_budget_s=1,
                      wrk_seconds=1, upload_mib=1, footprint_runs=1, cold_lookups=2, swarm_sizes=(12,),
                      swarm_lookups=20, failover_runs=1, failover_settle_s=0.5, failover_after_s=1.5,
                      failover_recovery_s=4,
                      embed_requests=2, embed_batches=1, ocr_lines=3, llm_streams=1, llm_max_tokens=4, llm_first_tokens=1,
                      model_requests=6, model_joins=1),
}


def mesh_started(mesh: Mesh) -> str:
    restarted = (f"; restarted the dht of {', '.join(mesh.restarted_dht)}, whose first record named "
                 "another URL" if mesh.restarted_dht else "")
    return f"mesh of {1 + len(mesh.providers)} nodes ready{restarted}"


class Context:
    def __init__(self, settings: Settings, stack: contextlib.ExitStack):
        self.settings = settings
        self.stack = stack
        self.workdir = procs.make_tmpdir()
        stack.callback(shutil.rmtree, self.workdir, ignore_errors=True)
        self._backend: Backend | None = None
        self._proxies: dict[str, ServerProcess] = {}
        self._node: Node | None = None
        self._mesh: Mesh | None = None
        self._started = time.monotonic()

    def scratch(self) -> Path:
        """A new folder of the run's own, removed with the run's workdir."""
        return procs.make_tmpdir(self.workdir)

    def progress(self, message: str) -> None:
        print(f"[bench {time.monotonic() - self._started:6.1f}s] {message}", flush=True)

    def backend(self) -> Backend:
        if self._backend is None:
            self.progress("starting the bench backend")
            self._backend = self.stack.enter_context(Backend(self.workdir))
        return self._backend

    def proxy(self, name: str) -> ServerProcess:
        """A baseline proxy in front of the backend: one of PROXIES."""
        if name not in self._proxies:
            backend_port = self.backend().port
            self.progress(f"starting {name} in front of the backend")
            self._proxies[name] = self.stack.enter_context(PROXIES[name](self.workdir, backend_port))
        return self._proxies[name]

    def node(self) -> Node:
        if self._node is None:
            backend_url = self.backend().url
            self.progress("starting a meshworker node (meshworker up)")
            self._node = self.stack.enter_context(Node(backend_url))
            self.progress(f"node healthy after {self._node.healthy_after_s:.2f} s")
        return self._node

    def mesh(self) -> Mesh:
        """Node A hosts `bench` (and the cold services) on the shared backend; B hosts nothing
        and forwards to A."""
        if self._mesh is None:
            url = self.backend().url
            names = [SERVICE] + [COLD_SERVICE.format(i) for i in range(self.settings.cold_lookups)]
            self.progress(f"starting a two-node mesh: A hosts {len(names)} services, B forwards")
            self._mesh = self.stack.enter_context(Mesh({"a": lambda _: [Hosted(n, url) for n in names]}))
            self.progress(mesh_started(self._mesh))
        return self._mesh
