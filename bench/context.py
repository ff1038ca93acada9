"""What a scenario gets: the run settings, progress output, and processes it can share.

The backend, nginx and the node are started on first use and stopped once, at the end,
by the ExitStack the harness closes in its `finally`.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass

from bench import procs
from bench.targets import Backend, Nginx, Node


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


SETTINGS = {
    "full": Settings("full", runs=5, latency_requests=2000, latency_warmup=200, latency_budget_s=8,
                     wrk_seconds=5, upload_mib=10, footprint_runs=3),
    "quick": Settings("quick", runs=2, latency_requests=300, latency_warmup=50, latency_budget_s=3,
                      wrk_seconds=2, upload_mib=10, footprint_runs=1),
    # Only proves the harness works end to end (the test runs it): its figures mean nothing.
    "smoke": Settings("smoke", runs=1, latency_requests=20, latency_warmup=5, latency_budget_s=1,
                      wrk_seconds=1, upload_mib=1, footprint_runs=1),
}


class Context:
    def __init__(self, settings: Settings, stack: contextlib.ExitStack):
        self.settings = settings
        self.stack = stack
        self.workdir = procs.make_tmpdir()
        stack.callback(shutil.rmtree, self.workdir, ignore_errors=True)
        self._backend: Backend | None = None
        self._nginx: Nginx | None = None
        self._node: Node | None = None
        self._started = time.monotonic()

    def progress(self, message: str) -> None:
        print(f"[bench {time.monotonic() - self._started:6.1f}s] {message}", flush=True)

    def backend(self) -> Backend:
        if self._backend is None:
            self.progress("starting the bench backend")
            self._backend = self.stack.enter_context(Backend(self.workdir))
        return self._backend

    def nginx(self) -> Nginx:
        if self._nginx is None:
            backend_port = self.backend().port
            self.progress("starting nginx in front of the backend")
            self._nginx = self.stack.enter_context(Nginx(self.workdir, backend_port))
        return self._nginx

    def node(self) -> Node:
        if self._node is None:
            backend_url = self.backend().url
            self.progress("starting a meshworker node (meshworker up)")
            self._node = self.stack.enter_context(Node(backend_url))
            self.progress(f"node healthy after {self._node.healthy_after_s:.2f} s")
        return self._node
