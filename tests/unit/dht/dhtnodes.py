"""What the dht's unit tests share besides fixtures (those are in conftest.py)."""

from __future__ import annotations

import time

from kademlia.utils import digest

from services.dht import records
from services.dht.node import DhtNode, Signer

SECRET = "m" * 32
OTHER_SECRET = "o" * 32


def seed(dht: DhtNode) -> tuple[tuple[str, int]]:
    """The seeds that make a new node join `dht`."""
    return (("127.0.0.1", dht.port),)


def plant(dht: DhtNode, signer: Signer, worker_id: str, service: str = "svc") -> None:
    """Store a record straight into one node's storage, as if only it had received the STORE."""
    record = records.new_record(service, worker_id, f"http://{worker_id}:8000", 60, time.time())
    dht.storage[digest(records.service_key(service))] = records.encode(
        {worker_id: records.sign(record, signer.identity, signer.proof)})
