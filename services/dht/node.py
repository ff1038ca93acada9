"""The Kademlia node of one meshworker: announce, withdraw and find signed provider records."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kademlia.network import Server
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol

from services.common.ratelimit import RateLimiter
from services.dht import lookup, records
from services.dht.admission import BURST, RATE_PER_S, Tokens
from services.dht.storage import ProviderStorage
from services.dht.unverified import UnverifiedPeers
from services.identity.node_key import NodeIdentity
from services.identity.proofs import proof_kind
from services.identity.trust import MeshTrust

log = logging.getLogger(__name__)
# rpcudp waits 5 s for an answer; a mesh's peers answer within milliseconds (LAN or the
# overlay, a few hundred across continents), and a dead peer would otherwise stall the
# lookups that meet it until kademlia drops it from the routing table.
RPC_TIMEOUT_S = 0.5
# A lookup returns what it found by then: the router waits 2 s for FindProviders.
LOOKUP_DEADLINE_S = 1.5
OBSERVERS = 8  # peers asked where they see this node: enough for a majority, few datagrams
REQUEST = b"\x00"  # rpcudp's first byte of a request (b"\x01" starts an answer)
# What find_node answers an asker that shows no token of this node: 2 contacts, about 80
# bytes for a request of about 75, so a forged source draws no more than it sent.
UNPROVEN_CONTACTS = 2
MAX_HELD_TOKENS = 1024  # peers' tokens this node keeps for its own requests
# Linux's IP_FREEBIND (the socket module does not name it): bind an address this host does
# not hold yet, so a node binds its overlay address before nebula's tun device is up.
IP_FREEBIND = 15


class MeshProtocol(KademliaProtocol):
    """kademlia's protocol hardened against abuse from any UDP sender (issue 12 H3):

    - find_node and find_value answer in full (k contacts, a value of up to 6.5 KB) only a
      request that carries the token this node gives the asker's address (admission.py);
      a request with another token (or b"") is answered {"token": a new one}, smaller than
      the request; one with no token argument at all (plain kademlia) gets UNPROVEN_CONTACTS
      contacts and never a value. Only an asker that showed a token, or a peer that answered
      this node, enters the routing table, and nothing is sent to it unasked.
    - requests are rate-limited per source host.
    - a contact that did not answer is left out of lookups for a while (lookup.DeadContacts).
    Its own find_node and find_value send the token they hold for the peer, and once more
    with the new one when the peer gives one (first contact, a restart, a rotated secret).
    """

    def __init__(self, source_node: Node, storage: ProviderStorage, ksize: int, unverified: UnverifiedPeers):
        super().__init__(source_node, storage, ksize)
        self._wait_timeout = RPC_TIMEOUT_S
        self.unverified = unverified
        self.tokens = Tokens()
        self.limiter = RateLimiter(RATE_PER_S, BURST)
        self.held: OrderedDict[tuple[str, int], bytes] = OrderedDict()  # the peers' tokens
        self.dead = lookup.DeadContacts()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data[:1] == REQUEST and not self.limiter.allow(addr[0]):
            return  # counted in limiter.refused
        self.dead.heard(addr)
        super().datagram_received(data, addr)

    def handle_call_response(self, result: tuple[bool, Any], node: Node) -> tuple[bool, Any]:
        # kademlia drops a contact that timed out from the routing table; peers that have not
        # timed out on it yet still name it, so it is remembered as dead too (lookup.py).
        if not result[0]:
            self.dead.died(node)
        return super().handle_call_response(result, node)

    def welcome_if_new(self, node: Node) -> None:
        # Not kademlia's welcome transfer (paper 2.5: send a new contact every key it should
        # hold): five pings from made-up node ids drew 119 STOREs, 695 KB, to the address they
        # claimed (issue 12 H3). Owners re-announce their records every half TTL (the
        # router's announcer), which reaches a new node as well.
        if self.router.is_new_node(node):
            self.router.add_contact(node)

    def rpc_ping(self, sender: tuple[str, int], nodeid: bytes) -> bytes:
        return self.source_node.id  # the asker joins the routing table once it shows a token

    def rpc_observed(self, sender: tuple[str, int]) -> str:
        """The IP the asking node's request came from, as libp2p's identify tells a peer its
        observedAddr: how this node would reach the asker (services/dht/reach.py)."""
        return sender[0]

    def rpc_store(self, sender: tuple[str, int], nodeid: bytes, key: bytes, value: object) -> bool:
        # kademlia's rpc_store, but the records dropped as not authentic are reported
        # with the address they came from; the answer is smaller than any STORE.
        self.unverified.saw(sender, self.storage.put(key, value))
        return True

    def rpc_find_node(self, sender: tuple[str, int], nodeid: bytes, key: bytes,
                      token: bytes | None = None) -> list | dict:
        if token is not None and not self.tokens.valid(sender, token):
            return {"token": self.tokens.issue(sender)}
        asker = Node(nodeid, sender[0], sender[1])
        if token is not None:
            self.welcome_if_new(asker)
        neighbors = self.router.find_neighbors(Node(key), exclude=asker)
        return [tuple(n) for n in neighbors[:None if token is not None else UNPROVEN_CONTACTS]]

    def rpc_find_value(self, sender: tuple[str, int], nodeid: bytes, key: bytes,
                       token: bytes | None = None) -> list | dict:
        value = self.storage.get(key, None)
        if value is None or not self.tokens.valid(sender, token):
            return self.rpc_find_node(sender, nodeid, key, token)
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        return {"value": value}

    async def call_find_node(self, node_to_ask: Node, node_to_find: Node) -> tuple[bool, Any]:
        return await self._call_with_token(self.find_node, node_to_ask, node_to_find)

    async def call_find_value(self, node_to_ask: Node, node_to_find: Node) -> tuple[bool, Any]:
        return await self._call_with_token(self.find_value, node_to_ask, node_to_find)

    async def _call_with_token(self, rpc: Callable, node_to_ask: Node, node_to_find: Node) -> tuple[bool, Any]:
        address = (node_to_ask.ip, node_to_ask.port)
        result = await rpc(address, self.source_node.id, node_to_find.id, self.held.get(address, b""))
        if result[0] and is_token(result[1]):
            self.held[address] = result[1]["token"]
            self.held.move_to_end(address)
            if len(self.held) > MAX_HELD_TOKENS:
                self.held.popitem(last=False)
            result = await rpc(address, self.source_node.id, node_to_find.id, result[1]["token"])
        return self.handle_call_response(result, node_to_ask)


def is_token(reply: object) -> bool:
    return isinstance(reply, dict) and reply.keys() == {"token"} and isinstance(reply["token"], bytes) \
        and len(reply["token"]) <= 64


class MeshServer(Server):
    def __init__(self, storage: ProviderStorage, node_id: bytes | None, unverified: UnverifiedPeers):
        super().__init__(storage=storage, node_id=node_id)
        self.unverified = unverified

    def _create_protocol(self) -> MeshProtocol:
        return MeshProtocol(self.node, self.storage, self.ksize, self.unverified)


@dataclass(frozen=True)
class Signer:
    """What this node signs its records with: its key and the mesh's proof of that key."""

    identity: NodeIdentity
    trust: MeshTrust

    @property
    def proof(self) -> bytes:
        # Asked at each announce, after a fresh look at the overlay's files: the announce
        # that follows a join (the overlay address appears) already carries the CA's proof.
        self.trust.refresh()
        return self.trust.proof(self.identity.public_key)


class DhtNode:
    def __init__(self, worker_id: str, ttl_s: float, signer: Signer, node_id: bytes | None = None):
        self.worker_id = worker_id
        self.ttl_s = ttl_s
        self.signer = signer
        self.storage = ProviderStorage(signer.trust)
        self.unverified = UnverifiedPeers()
        self.server = MeshServer(self.storage, node_id, self.unverified)
        self.host, self.port = "", 0  # where the DHT listens, once it does
        self._announced: dict[str, records.Record] = {}
        self.holders: dict[bytes, Node] = {}  # peers that kept this node's last records, least recent first
        self._proof_kind = ""

    @property
    def node_id(self) -> bytes:
        return self.server.node.id

    async def start(self, host: str, port: int, seeds: list[tuple[str, int]]) -> None:
        await self.listen(host, port)
        self.server.refresh_table()
        await self.bootstrap(seeds)

    async def listen(self, host: str, port: int) -> None:
        """Bind (host, port), or move there from the address bound before, keeping the routing
        table and the records stored: a node that joins an overlay moves its DHT onto it."""
        if self.server.transport is not None:
            self.server.transport.close()
            await asyncio.sleep(0)  # the old socket is closed on the loop's next turn
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        protocol = self.server.protocol or self.server._create_protocol()
        loop = asyncio.get_running_loop()
        self.server.transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
        self.server.protocol = protocol
        self.host, self.port = host, sock.getsockname()[1]
        log.info("DHT listening on UDP %s:%d, node id %s", host, self.port, self.node_id.hex()[:12])

    async def bootstrap(self, seeds: list[tuple[str, int]]) -> int:
        if not seeds:
            log.info("no DHT seeds: this node is a bootstrap node")
            return 0
        addresses = await _resolve(seeds)
        found = await self.server.bootstrap(addresses) if addresses else []
        log.info("DHT bootstrap from %s: %d peers answered", seeds, len(found))
        return len(found)

    def stop(self) -> None:
        self.server.stop()

    async def announce(self, service: str, url: str, ttl_s: float = 0,
                       **summary: Any) -> tuple[records.Record, int]:
        """Sign and store this node's record of `service`; `url` is where peers reach it."""
        previous = self._announced.get(service, {}).get("sequence", 0)
        record = records.new_record(service, self.worker_id, url, ttl_s or self.ttl_s, time.time(),
                                    previous, **summary)
        record = records.sign(record, self.signer.identity, self._proof())
        self._announced[service] = record
        stored = await self._store(service, record)
        log.info("Published service: %s by %s (%s), stored on %d nodes",
                 service, self.worker_id, record["url"], stored)
        return record, stored

    async def withdraw(self, service: str) -> bool:
        record = self._announced.pop(service, None)
        if record is None:
            return False
        gone = records.sign(records.tombstone(record, time.time()), self.signer.identity, self._proof())
        await self._store(service, gone)
        log.info("Withdrew service: %s", service)
        return True

    def _proof(self) -> bytes:
        proof = self.signer.proof
        if proof_kind(proof) != self._proof_kind:
            self._proof_kind = proof_kind(proof)
            described = {"ca": "the mesh CA's proof", "secret": "the mesh secret's proof",
                         "none": "no proof (no mesh secret, and the overlay's CA has not certified this key)"}
            log.info("this node's records carry %s of its key", described[self._proof_kind])
        return proof

    async def find_providers(self, service: str) -> list[records.Record]:
        """The union of the provider sets held here and on the k nodes closest to the key
        (past them when they hold nothing: services/dht/lookup.py).

        kademlia's own get() stops at the first value (and prefers a local one), which
        would hide providers stored only elsewhere; a provider set must be merged. What is
        held here is checked again: a key may have lost the mesh's trust since it was stored
        (its certificate revoked or expired).
        """
        dkey = records.storage_key(service)
        now = time.time()
        merged = records.authentic(records.decode(self.storage.get(dkey)), self.signer.trust, dkey, now)

        def take(peer: Node, value: object) -> bool:
            nonlocal merged
            found, dropped = records.partition(records.decode(value), self.signer.trust, dkey, now)
            self.unverified.saw((peer.ip, peer.port), dropped)
            merged = records.merge(merged, found, time.time())
            return bool(found)

        await self._crawl(dkey, self.server.protocol.call_find_value, take)
        merged = records.merge({}, merged, time.time())
        return sorted(merged.values(), key=lambda r: r["worker_id"])

    def services_stored(self) -> list[str]:
        """Services with live records on this node (every service, in a mesh of ≤ k nodes)."""
        now = time.time()
        found = {r["service"] for key, value in self.storage for r in records.merge(
                 {}, records.authentic(records.decode(value), self.signer.trust, key, now), now).values()}
        return sorted(found)

    def rate_limited(self) -> int:
        """Requests this node dropped by the per-host rate limit since it started."""
        return self.server.protocol.limiter.refused if self.server.protocol is not None else 0

    def peers(self) -> list[Node]:
        if self.server.protocol is None:  # not listening yet
            return []
        return [n for bucket in self.server.protocol.router.buckets for n in bucket.get_nodes()]

    async def observed_answers(self) -> list[tuple[str, object]]:
        """(peer IP, what it answered) from the first OBSERVERS known peers asked where they see
        this node's requests come from (rpc_observed); a peer that does not answer is left out."""
        peers = self.peers()[:OBSERVERS]
        replies = await asyncio.gather(*(self.server.protocol.observed((p.ip, p.port)) for p in peers))
        return [(p.ip, answer) for p, (ok, answer) in zip(peers, replies, strict=True) if ok]

    async def ping(self, peer: Node) -> float | None:
        """Round-trip time to a peer in seconds, or None when it does not answer."""
        started = time.perf_counter()
        ok, _ = await self.server.protocol.call_ping(peer)
        return time.perf_counter() - started if ok else None

    async def _crawl(self, dkey: bytes, ask: lookup.Ask,
                     take_value: Callable[[Node, Any], bool] | None = None) -> list[Node]:
        target = Node(dkey)
        start = self.server.protocol.router.find_neighbors(target, k=lookup.WIDEN * self.server.ksize)
        return await lookup.crawl(target, start, ask, self.server.ksize, LOOKUP_DEADLINE_S, take_value,
                                  skip=self.server.protocol.dead)

    async def _store(self, service: str, record: records.Record) -> int:
        """Store on this node, on the k closest peers and on the peers that kept this node's
        records before; returns on how many nodes the record is held.

        Nodes next to a key may accept STOREs and keep nothing (issue 12 H2: node ids are
        free to choose), so when fewer than half of the k closest keep a live record, it is
        stored past them, on the WIDEN*k closest this node knows, as a lookup reads past them.
        """
        dkey = records.storage_key(service)
        value = records.encode({self.worker_id: record})
        self.storage[dkey] = value
        closest = await self._crawl(dkey, self.server.protocol.call_find_node)
        asked = {n.id: n for n in [*closest, *self.holders.values()]}
        kept = await self._place(dkey, value, record, list(asked.values()))
        if 2 * len(kept & {n.id for n in closest}) < len(closest) and records.live(record):
            known = self.server.protocol.router.find_neighbors(Node(dkey), k=lookup.WIDEN * self.server.ksize)
            kept |= await self._place(dkey, value, record, [n for n in known if n.id not in asked])
        return 1 + len(kept)

    async def _place(self, dkey: bytes, value: str, record: records.Record, nodes: list[Node]) -> set[bytes]:
        """STORE on `nodes`; the ids of those that hold the record then. A live record is read
        back (accepting a STORE proves nothing), and the peers that keep it are the holders
        the next stores go to as well; a tombstone leaves nothing to read, so answering does."""
        protocol = self.server.protocol
        replies = await asyncio.gather(*(protocol.call_store(n, dkey, value) for n in nodes))
        nodes = [n for n, (ok, _) in zip(nodes, replies, strict=True) if ok]
        if not records.live(record):
            return {n.id for n in nodes}
        answers = await asyncio.gather(*(protocol.call_find_value(n, Node(dkey)) for n in nodes))
        kept = {n.id for n, (ok, answer) in zip(nodes, answers, strict=True) if ok and self._holds(answer, record)}
        for node in nodes:
            self.holders.pop(node.id, None)
            if node.id in kept:
                self.holders[node.id] = node  # most recent last
        while len(self.holders) > lookup.WIDEN * self.server.ksize:
            self.holders.pop(next(iter(self.holders)))
        return kept

    def _holds(self, answer: object, record: records.Record) -> bool:
        """Whether a find_value answer holds this very record of this node's."""
        value = answer.get("value") if isinstance(answer, dict) else None
        held = records.decode(value).get(self.worker_id)
        return isinstance(held, dict) and held.get("sequence") == record["sequence"]


async def _resolve(seeds: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Kademlia wants IP addresses; seeds may be names (MESHWORKER_DHT_SEEDS=node-a:8468).
    A name that does not resolve (yet) is skipped, not fatal: other seeds may answer."""
    loop = asyncio.get_running_loop()
    resolved = []
    for host, port in seeds:
        try:
            infos = await loop.getaddrinfo(host, port, type=2)  # SOCK_DGRAM
        except OSError as err:
            log.warning("DHT seed %s:%d does not resolve: %s", host, port, err)
            continue
        resolved.append((infos[0][4][0], port))
    return resolved
