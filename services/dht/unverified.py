"""Peers that sent records this node cannot verify, so the node says so instead of
dropping them silently: a node of another mesh (another secret or CA) on the same
network, a node whose membership was revoked, or a forger.

One log line per peer, not per record; a bounded table, since a source address is
whatever a UDP datagram claims.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.dht.records import Record

log = logging.getLogger(__name__)
MAX_PEERS = 64
MAX_NAME_CHARS = 64


@dataclass
class UnverifiedPeer:
    address: str  # "ip:port" the records came from
    worker_id: str  # the worker id the latest such record claims
    records: int
    last_seen: float


def claimed_worker(worker: object, record: object) -> str:
    """The worker id a record claims, printable and short (it is the sender's text)."""
    name = record.get("worker_id") if isinstance(record, dict) else None
    name = name if isinstance(name, str) else str(worker)
    return "".join(c for c in name if c.isprintable())[:MAX_NAME_CHARS]


class UnverifiedPeers:
    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.total = 0  # records, since start: meshworker_dht_unverified_records_total
        self._peers: dict[str, UnverifiedPeer] = {}

    def saw(self, address: tuple[str, int], rejected: dict[str, Record]) -> None:
        """Note records from `address` that were dropped as not authentic."""
        if not rejected:
            return
        key = f"{address[0]}:{address[1]}"
        claimed = claimed_worker(*next(iter(rejected.items())))
        self.total += len(rejected)
        peer = self._peers.get(key)
        if peer is None:
            log.warning("DHT peer %s sent records this node cannot verify (worker %r): signed for another "
                        "mesh (its secret or CA), revoked, or forged; they are ignored", key, claimed)
            if len(self._peers) >= MAX_PEERS:
                del self._peers[min(self._peers.values(), key=lambda p: p.last_seen).address]
            peer = self._peers[key] = UnverifiedPeer(key, claimed, 0, 0.0)
        peer.worker_id, peer.last_seen = claimed, self.clock()
        peer.records += len(rejected)

    def peers(self) -> list[UnverifiedPeer]:
        """Most recently seen first."""
        return sorted(self._peers.values(), key=lambda p: p.last_seen, reverse=True)
