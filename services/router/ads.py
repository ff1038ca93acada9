"""Envoy's Aggregated Discovery Service, state of the world, on the router's grpcio server.

One stream carries every type. For each type Envoy subscribes to, the stream sends the
current snapshot's resources when their version or the names Envoy asked for differ
from what it last sent, in make-before-break order (resources.PUSH_ORDER). A request
that echoes the last nonce is an ACK, or a NACK when it carries error_detail: a NACK is
logged with Envoy's reason and nothing is rolled back, as Envoy keeps its last good
configuration and we keep serving ours until the next change (Envoy's xDS protocol
docs, "ACK/NACK and resource type instance version").
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from services.router.xds.resources import PUSH_ORDER, Snapshot

log = logging.getLogger(__name__)


@dataclass
class Sent:
    version: int
    nonce: str
    asked: tuple[str, ...]  # the names Envoy had asked for (() for all)
    names: tuple[str, ...]  # the names the response carried


@dataclass
class TypeState:
    """One resource type on one stream: what Envoy wants, what it got, what it took."""

    names: tuple[str, ...] = ()  # () for a wildcard subscription (listeners, clusters)
    sent: Sent | None = None
    acked: Sent | None = None


@dataclass
class Applied:
    """What the connected Envoy has acknowledged, for readiness and /health."""

    connected: bool = False
    acked: dict[str, Sent] = field(default_factory=dict)  # type URL -> last ACKed response
    last_nack: str = ""

    def holds(self, version: int, type_url: str, name: str | None = None) -> bool:
        """Whether Envoy took a response of this type at `version` or later (naming `name`)."""
        sent = self.acked.get(type_url)
        return sent is not None and sent.version >= version and (name is None or name in sent.names)

    def version(self) -> int:
        return min((s.version for s in self.acked.values()), default=0)


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, snapshot: Snapshot, on_nack: Callable[[], None] = lambda: None):
        self.snapshot = snapshot
        self.on_nack = on_nack
        self.applied = Applied()
        self._changed = asyncio.Condition()
        self._nonces = itertools.count(1)

    async def publish(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, applied: Callable[[Applied], bool], timeout_s: float | None) -> bool:
        """Wait until Envoy's acknowledged state satisfies `applied`; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: applied(self.applied))
        except TimeoutError:
            return False
        return True

    async def StreamAggregatedResources(self, request_iterator, context) -> None:
        types: dict[str, TypeState] = {}
        self.applied = applied = Applied(connected=True)  # this stream's; a newer stream has its own
        reader = asyncio.create_task(self._read(request_iterator, types, applied))
        log.info("Envoy connected for its configuration (ADS)")
        try:
            while not reader.done():
                for response in self._due(types):
                    await context.write(response)
                async with self._changed:
                    await self._changed.wait_for(lambda: reader.done() or any(self._due_types(types)))
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            applied.connected = False
            async with self._changed:
                self._changed.notify_all()
            log.info("Envoy's ADS stream ended")

    async def _read(self, requests, types: dict[str, TypeState], applied: Applied) -> None:
        try:
            async for request in requests:
                self._take(request, types.setdefault(request.type_url, TypeState()), applied)
                async with self._changed:
                    self._changed.notify_all()
        finally:  # the stream ended: wake the writer so it ends too
            async with self._changed:
                self._changed.notify_all()

    def _take(self, request: discovery_pb2.DiscoveryRequest, state: TypeState, applied: Applied) -> None:
        sent = state.sent
        if request.response_nonce and (sent is None or request.response_nonce != sent.nonce):
            return  # answers a response we have since replaced: stale, ignored by the protocol
        state.names = tuple(sorted(request.resource_names))
        if sent is None or not request.response_nonce:
            return
        if request.HasField("error_detail"):
            reason = request.error_detail.message
            applied.last_nack = reason
            self.on_nack()
            log.error("Envoy refused configuration %d of %s (keeping its last good one): %s",
                      sent.version, request.type_url.rsplit(".", 1)[-1], reason)
            state.sent = Sent(sent.version, sent.nonce, state.names, sent.names)  # not resent until a change
            return
        state.acked = sent
        applied.acked[request.type_url] = sent

    def _due_types(self, types: dict[str, TypeState]) -> list[str]:
        version = self.snapshot.version
        return [t for t in PUSH_ORDER if t in types and (
            types[t].sent is None or types[t].sent.version != version or types[t].sent.asked != types[t].names)]

    def _due(self, types: dict[str, TypeState]) -> list[discovery_pb2.DiscoveryResponse]:
        responses = []
        for type_url in self._due_types(types):
            state, snapshot = types[type_url], self.snapshot
            nonce = str(next(self._nonces))
            found = snapshot.of(type_url, list(state.names))
            state.sent = Sent(snapshot.version, nonce, state.names,
                              tuple(n for n in snapshot.resources.get(type_url, {}) if not state.names or n in state.names))
            resources = []
            for resource in found:
                packed = any_pb2.Any()
                packed.Pack(resource)
                resources.append(packed)
            responses.append(discovery_pb2.DiscoveryResponse(
                version_info=str(snapshot.version), type_url=type_url, nonce=nonce, resources=resources))
        return responses
