"""This node's runtime facts on disk, written and read here alone (in the runtime dir).

- gateway.json: where Envoy's listeners are bound. With gateway_port or peer_port 0 (tests,
  several nodes on one host) only Envoy knows the real ports: the router writes them each
  time a (re)started Envoy has taken its listeners; the CLI, the dht (its advertised URL),
  the container's health check and the start-up progress read them.
- node.json: when `meshworker up` started the node (the api's uptime, the progress lines).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from services.common.config import Config
from services.common.statefile import write_atomically

GATEWAY_FILE, NODE_FILE = "gateway.json", "node.json"
WILDCARDS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class GatewayAddress:
    host: str  # as configured: may be a wildcard
    port: int  # the client listener's
    peer_port: int  # the peer listener's; 0 without one (no TLS credentials)

    @property
    def local_url(self) -> str:
        """How a process on this host reaches the client listener."""
        host = "127.0.0.1" if self.host in WILDCARDS else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"


def gateway_path(cfg: Config) -> Path:
    return cfg.runtime_dir / GATEWAY_FILE


def write_gateway(cfg: Config, address: GatewayAddress) -> None:
    write_atomically(gateway_path(cfg), json.dumps(
        {"host": address.host, "port": address.port, "peer_port": address.peer_port}).encode())


def read_gateway(cfg: Config) -> GatewayAddress | None:
    """None until the router has written it (Envoy has not bound its listeners yet)."""
    try:
        doc = json.loads(gateway_path(cfg).read_text())
        return GatewayAddress(str(doc["host"]), int(doc["port"]), int(doc["peer_port"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_started(cfg: Config, at: float) -> None:
    write_atomically(cfg.runtime_dir / NODE_FILE, json.dumps({"started_at": at}).encode())


def started_at(cfg: Config) -> float:
    """When `up` started this node; now, for a component run without `up`."""
    try:
        return float(json.loads((cfg.runtime_dir / NODE_FILE).read_text())["started_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return time.time()
