"""Several meshworker nodes on loopback forming one mesh: one that hosts nothing and
forwards (the DHT seed), and providers that seed from it.

Why the providers seed from the forwarder and not the other way round: a node advertises
the local address it uses toward its first DHT seed (with its Envoy peer listener's real
port), and a node without seeds advertises its host name, which need not reach a listener
bound to 127.0.0.1. A provider seeded on 127.0.0.1 advertises https://127.0.0.1:<its peer
port> (mTLS, with certificates derived from the shared mesh secret), which the forwarder can
reach; the forwarder itself advertises nothing, as it hosts nothing. Every node binds its
client and peer listeners on free ports of its own (bench.targets.Node): nodes on one host
must not share 8443, which Envoy's reuse_port lets them do silently.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Self

import grpc

from bench import procs
from bench.targets import READY_DEADLINE_S, Hosted, Node, stopped_on_failure
from services.common.rpc import dht_pb2

# A provider's services, given its state directory (where a supervised backend's socket lives).
ServicesFor = Callable[[Path], list[Hosted]]


class Mesh:
    def __init__(self, providers: dict[str, ServicesFor], forwarder: str = "b",
                 ready_deadline_s: float = READY_DEADLINE_S, env: dict[str, str] | None = None):
        self.secret = secrets.token_urlsafe(24)  # ≥ 16 characters, shared by every node of this mesh
        self.forwarder_name = forwarder
        self.plans = providers
        self.ready_deadline_s = ready_deadline_s  # a provider's, to be healthy (longer where models load)
        self.forwarder: Node | None = None
        self.providers: dict[str, Node] = {}
        self.restarted_dht: list[str] = []  # providers whose first record named another URL
        self.settings = env or {}  # MESHWORKER_* settings every node of this mesh gets
        self.seed = ""  # the forwarder's DHT address, once it has bound it
        self._stack = contextlib.ExitStack()

    def env(self, name: str, seed: str = "") -> dict[str, str]:
        env = {"MESHWORKER_MESH_SECRET": self.secret, "MESHWORKER_WORKER_ID": self.worker_id(name),
               "MESHWORKER_GATEWAY_HOST": "127.0.0.1", "MESHWORKER_DHT_HOST": "127.0.0.1", **self.settings}
        return env | ({"MESHWORKER_DHT_SEEDS": seed} if seed else {})

    def __enter__(self) -> Self:
        with stopped_on_failure(self):
            self.forwarder = Node(services=[], env=self.env(self.forwarder_name))
            self._stack.push(self.forwarder.__exit__)
            self.forwarder.launch()
            # The providers need only the forwarder's DHT port, not its gateway: start them now.
            self.seed = f"127.0.0.1:{procs.wait_until(self.forwarder_dht_port, READY_DEADLINE_S, 'forwarder DHT')}"
            for name, services_for in self.plans.items():  # started together, then waited for
                node = self.provider(name, services_for)
                self._stack.push(node.__exit__)
                node.launch()
                self.providers[name] = node
            for node in [self.forwarder, *self.providers.values()]:
                node.wait_ready()
            self.wait_for_records()
        return self

    def provider(self, name: str, services_for: ServicesFor) -> Node:
        """A provider node of this mesh, not started yet. One made after the mesh is up (a node
        joining later) is the caller's to stop: `with mesh.provider(...) as node:`."""
        state_dir = procs.make_tmpdir()
        return Node(services=services_for(state_dir), env=self.env(name, self.seed), state_dir=state_dir,
                    ready_deadline_s=self.ready_deadline_s)

    def wait_for_records(self) -> None:
        """Until the forwarder's dht holds every provider's record with its peer listener's URL.

        A record that names another URL (a port from before Envoy bound, say) would stay so
        until the republish at about half the TTL. Restarting that provider's dht makes its
        router announce again at once (it re-announces when the dht comes back).
        """
        current = procs.wait_until(self.providers_found, READY_DEADLINE_S, "provider records in the forwarder's DHT")
        self.restarted_dht = [name for name, ok in current.items() if not ok]
        for name in self.restarted_dht:
            # kill -9, not `supervisorctl restart`: a graceful stop of the dht takes seconds, and
            # supervisord restarts a crashed program at once.
            os.kill(self.providers[name].program_pid("dht"), signal.SIGKILL)
        procs.wait_until(lambda: all((self.providers_found() or {"": False}).values()), READY_DEADLINE_S,
                         "provider records with each peer listener's URL in the forwarder's DHT")

    def forwarder_dht_port(self) -> int:
        if self.forwarder.proc.poll() is not None:
            raise RuntimeError(f"meshworker up exited with {self.forwarder.proc.returncode}:\n"
                               f"{self.forwarder.log_tail()}")
        try:
            return self.forwarder.dht_port()  # 0 until the dht has bound its UDP socket
        except grpc.RpcError:
            return 0

    def expected_providers(self) -> dict[str, set[str]]:
        """service -> worker ids of the nodes that host it."""
        expected: dict[str, set[str]] = {}
        for name, node in self.providers.items():
            for svc in node.services:
                expected.setdefault(svc.name, set()).add(self.worker_id(name))
        return expected

    def providers_found(self) -> dict[str, bool] | None:
        """None until the forwarder's dht holds a record of every provider for every service it
        hosts; then, by provider, whether its records advertise its peer listener's URL. Asked of the
        dht directly, so the forwarder's router caches nothing: its first request for a service
        stays cold."""
        urls = {self.worker_id(name): node.peer_url for name, node in self.providers.items()}
        wrong = set()
        for service, workers in self.expected_providers().items():
            try:
                reply = self.forwarder.dht("FindProviders", dht_pb2.FindProvidersRequest(service=service))
            except grpc.RpcError:
                return None
            found = {p.worker_id: p.url for p in reply.providers}
            if not workers <= set(found):
                return None
            wrong |= {w for w in workers if found[w] != urls[w]}
        return {name: self.worker_id(name) not in wrong for name in self.providers}

    @staticmethod
    def worker_id(name: str) -> str:
        return f"bench-{name}"

    def __exit__(self, *exc) -> None:
        # SIGTERM to every node first, so they wind down together; each stop then waits for its own.
        for node in [self.forwarder, *self.providers.values()]:
            if node is not None and node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        self._stack.close()
