"""What the dht keeps across restarts: its Kademlia node id and the peers it knew.

With the same id a restarted node takes back its place in the keyspace, and the known
peers let it rejoin when the configured seeds are down. Neither is precious: a new id
only moves the node in the keyspace (its records are re-announced), and the seeds give
new peers. So a corrupt file is moved aside (kept for a look) and the node starts fresh,
with one error in the log naming both files, instead of a dht that exits at every start
until supervisord gives up.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.common.statefile import StateError, write_atomically

STATE_FILE = "dht.json"
log = logging.getLogger(__name__)


@dataclass
class DhtState:
    node_id: bytes = field(default_factory=lambda: os.urandom(20))
    peers: list[tuple[str, int]] = field(default_factory=list)
    port: int = 0  # the UDP port last bound, taken again when dht_port is 0


def _peer(entry: object) -> tuple[str, int]:
    host, port = entry  # type: ignore[misc]  # a ValueError/TypeError when not a pair
    if not isinstance(host, str):
        raise TypeError(f"peer host {host!r} is not a string")
    if not host:
        raise ValueError("a peer host is empty")
    if isinstance(port, bool) or not 0 < int(port) < 65536:
        raise ValueError(f"peer port {port!r} is not a UDP port")
    return host, int(port)


def _parse(text: str) -> DhtState:
    data = json.loads(text)
    node_id = bytes.fromhex(data["node_id"])
    if len(node_id) != 20:  # a Kademlia id is 160 bits; another length moves the node
        raise ValueError(f"node_id has {len(node_id)} bytes, not 20")
    if not isinstance(data["peers"], list):
        raise TypeError("peers is not a list")
    return DhtState(node_id, [_peer(entry) for entry in data["peers"]], int(data.get("port", 0)))


def load(state_dir: Path) -> DhtState:
    """The saved state; a new one when there is none or when the file is corrupt (then
    moved aside to dht.json.corrupt-<unix time>). StateError only when it cannot be moved."""
    path = state_dir / STATE_FILE
    try:
        return _parse(path.read_text())
    except FileNotFoundError:
        return DhtState()
    except (ValueError, KeyError, TypeError) as err:  # UnicodeDecodeError is a ValueError
        aside = path.with_name(f"{STATE_FILE}.corrupt-{int(time.time())}")
        try:
            os.replace(path, aside)
        except OSError as move_err:
            raise StateError(f"{path} is corrupt ({err}) and could not be moved aside ({move_err}); "
                             "move it away to start with a new DHT id") from None
        log.error("%s is corrupt (%s): moved to %s; starting with a new DHT node id", path, err, aside.name)
        return DhtState()


def save(state_dir: Path, state: DhtState) -> None:
    text = json.dumps({"node_id": state.node_id.hex(), "peers": state.peers, "port": state.port})
    write_atomically(state_dir / STATE_FILE, text.encode())
