"""Real kademlia nodes on 127.0.0.1 for the dht's unit tests: `make_signer`, `make_node`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from dhtnodes import SECRET

from services.dht.node import DhtNode, Signer
from services.identity.node_key import NodeIdentity
from services.identity.trust import MeshTrust


@pytest.fixture
def make_signer(tmp_path) -> Callable[[str, str], Signer]:
    """make_signer(worker_id, secret) → the Signer of a node whose state is tmp_path/worker_id."""
    def make(worker_id: str, secret: str = SECRET) -> Signer:
        return Signer(NodeIdentity.load_or_create(tmp_path / worker_id), MeshTrust(secret))
    return make


@pytest.fixture
async def make_node(make_signer) -> AsyncIterator[Callable]:
    """make_node(worker_id, seeds=(), secret=SECRET, node_id=None) → a started DhtNode; every one
    is stopped at teardown."""
    nodes: list[DhtNode] = []

    async def make(worker_id: str, seeds: tuple[tuple[str, int], ...] = (), secret: str = SECRET,
                   node_id: bytes | None = None, signer: Signer | None = None) -> DhtNode:
        dht = DhtNode(worker_id, 60, signer or make_signer(worker_id, secret),
                      node_id=node_id)
        nodes.append(dht)
        await dht.start("127.0.0.1", 0, list(seeds))
        return dht

    yield make
    for dht in nodes:
        dht.stop()
