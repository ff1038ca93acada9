"""What the dht keeps across restarts: its Kademlia node id and the peers it knew.

With the same id a restarted node takes back its place in the keyspace, and the known
peers let it rejoin when the configured seeds are down.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from services.common.statefile import StateError, write_atomically

STATE_FILE = "dht.json"


@dataclass
class DhtState:
    node_id: bytes = field(default_factory=lambda: os.urandom(20))
    peers: list[tuple[str, int]] = field(default_factory=list)
    port: int = 0  # the UDP port last bound, taken again when dht_port is 0


def load(state_dir: Path) -> DhtState:
    path = state_dir / STATE_FILE
    if not path.exists():
        return DhtState()
    try:
        data = json.loads(path.read_text())
        node_id = bytes.fromhex(data["node_id"])
        if len(node_id) != 20:  # a Kademlia id is 160 bits; another length moves the node
            raise ValueError(f"node_id has {len(node_id)} bytes, not 20")
        return DhtState(node_id, [(h, int(p)) for h, p in data["peers"]], int(data.get("port", 0)))
    except (ValueError, KeyError, TypeError) as err:
        raise StateError(f"{path} is corrupt ({err}); move it away to start with a new DHT id") from None


def save(state_dir: Path, state: DhtState) -> None:
    text = json.dumps({"node_id": state.node_id.hex(), "peers": state.peers, "port": state.port})
    write_atomically(state_dir / STATE_FILE, text.encode())
