"""An iterative Kademlia lookup that outlasts dead and lying contacts (issue 12 H2).

kademlia's SpiderCrawl asks alpha contacts in lock-step rounds and waits for the slowest
of each round, so every dead contact among the closest costs a whole RPC timeout in turn:
a lookup through dead contacts took 2.1 s, past the router's 2 s deadline. Here every
contact not yet asked among the closest is asked at once (alpha = the width: a mesh's DHT
is small, and a value lookup asks the k closest anyway), each answer is used as it
arrives, and the lookup as a whole has a deadline. A value lookup that heard no value
from the k closest goes on past them to the WIDEN*k closest: nodes that accept STOREs and
keep nothing can take the k places next to a key (ids are free to choose), not every
member's place in a reader's view, and every provider holds its own record.

Contacts that did not answer lately are not asked (DeadContacts): kademlia drops a contact
from this node's routing table when a request to it times out, but the peers that have not
asked it yet still name it in their answers, so every lookup would wait for it again.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Container
from typing import Any

from kademlia.node import Node

Ask = Callable[[Node, Node], Awaitable[tuple[bool, Any]]]
WIDEN = 3
ID_BYTES = 20
# Long enough to span the lookups that follow a batch of nodes leaving (their peers forget
# them only as they ask them, one RPC timeout each), short enough that a contact back at
# the same address is asked again within a minute; any datagram from it forgives it sooner.
DEAD_FOR_S = 60.0
MAX_DEAD = 1024  # addresses remembered; a peer may name any number of made-up contacts


class DeadContacts:
    """Addresses whose last request from this node timed out, for DEAD_FOR_S; `node in dead`
    says whether a lookup should leave a contact out. Bounded: the oldest go first."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._since: OrderedDict[tuple[str, int], float] = OrderedDict()

    def died(self, node: Node) -> None:
        self._since.pop((node.ip, node.port), None)
        self._since[(node.ip, node.port)] = self.clock()  # most recent last
        if len(self._since) > MAX_DEAD:
            self._since.popitem(last=False)

    def heard(self, address: tuple) -> None:
        """A datagram came from `address` (an IPv6 one has 4 fields): it is alive after all."""
        self._since.pop(tuple(address[:2]), None)

    def __contains__(self, node: object) -> bool:
        since = self._since.get((node.ip, node.port)) if isinstance(node, Node) else None
        if since is not None and self.clock() - since >= DEAD_FOR_S:
            del self._since[(node.ip, node.port)]
            return False
        return since is not None


async def crawl(target: Node, start: list[Node], ask: Ask, ksize: int, deadline_s: float,
                take_value: Callable[[Node, Any], bool] | None = None, skip: Container[Node] = ()) -> list[Node]:
    """The `ksize` closest nodes to `target` that answered `ask(node, target)`: a
    protocol's call_find_node or call_find_value. Contacts in `skip` are not asked.

    A {"value": v} answer goes to take_value(node, v), which says whether it held what was
    looked for; with take_value, the lookup widens when the k closest held nothing. Queries
    still in flight at the end are left to rpcudp's timeout, which resolves each of them.
    """
    known = {n.id: n for n in start}
    asked, failed = set[bytes](), set[bytes]()
    answered: dict[bytes, Node] = {}
    pending: dict[asyncio.Future, Node] = {}
    width, found = ksize, False
    end = asyncio.get_running_loop().time() + deadline_s
    while True:
        closest = sorted((n for i, n in known.items() if i not in failed and n not in skip),
                         key=target.distance_to)[:width]
        for node in closest:
            if node.id not in asked:
                asked.add(node.id)
                pending[asyncio.ensure_future(ask(node, target))] = node
        if all(n.id in answered for n in closest):
            if take_value is None or found or width > ksize:
                break
            width = WIDEN * ksize  # the k closest answered, none with a value: go on past them
            continue
        done, _ = await asyncio.wait(pending, timeout=end - asyncio.get_running_loop().time(), return_when=asyncio.FIRST_COMPLETED)
        if not done:
            break  # the deadline: what was found so far
        for future in done:
            node = pending.pop(future)
            ok, reply = future.result()
            if not ok:
                failed.add(node.id)
                continue
            answered[node.id] = node
            found = _took_value(node, reply, take_value) or found
            for contact in contacts(reply, ksize):
                known.setdefault(contact.id, contact)
    return sorted(answered.values(), key=target.distance_to)[:ksize]


def _took_value(node: Node, reply: object, take_value: Callable[[Node, Any], bool] | None) -> bool:
    """Whether a {"value": v} answer held what was looked for, as take_value judges it."""
    return take_value is not None and isinstance(reply, dict) and "value" in reply and take_value(node, reply["value"])


def contacts(reply: object, limit: int) -> list[Node]:
    """The contacts in a find_node answer: [(id, ip, port), ...]; a peer may send anything,
    so what is not one is skipped, and no more than `limit` are taken from one answer."""
    if not isinstance(reply, list):
        return []
    found = []
    for entry in reply[:limit]:
        if isinstance(entry, (list, tuple)) and len(entry) == 3:
            node_id, ip, port = entry
            if isinstance(node_id, bytes) and len(node_id) == ID_BYTES and isinstance(ip, str) \
                    and isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
                found.append(Node(node_id, ip, port))
    return found
