"""The gateway's side of the control path: the pushed route table and outcome reports.

The router pushes its whole table over WatchRoutes whenever it changes, so a request
whose route is known costs no gRPC call. Outcomes are queued and sent in batches off
the request path; if the router is down they wait (bounded) until it is back.
Successes wait up to OUTCOME_BATCH_S for company: one call per request cost a third of
the gateway's CPU (most of it in gRPC's poller thread). A failure goes at once, since
the router then stops preferring the provider that failed, and so does a flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

import grpc

from services.common.grpcclient import DEADLINE_S
from services.common.rpc import router_pb2, router_pb2_grpc

log = logging.getLogger(__name__)
RECONNECT_S = 0.2
MAX_PENDING_OUTCOMES = 100_000
OUTCOME_BATCH_S = 0.1


class RouterLink:
    def __init__(self, channel: grpc.aio.Channel):
        self.stub = router_pb2_grpc.RouterStub(channel)
        self.routes: dict[str, router_pb2.Route] = {}
        self.table_version = 0  # 0 until a table arrived: the gateway cannot route yet
        self.connected = False
        self._pending: deque[router_pb2.Outcome] = deque(maxlen=MAX_PENDING_OUTCOMES)
        self._queued = asyncio.Event()
        self._urgent = asyncio.Event()  # send what is queued without waiting for company
        self._idle = asyncio.Event()
        self._idle.set()

    async def watch_routes(self) -> None:
        while True:
            try:
                async for table in self.stub.WatchRoutes(router_pb2.WatchRoutesRequest()):
                    self.routes = {r.service: r for r in table.routes}
                    self.table_version = table.version
                    if not self.connected:
                        log.info("route table %d from router: %s", table.version, sorted(self.routes))
                    self.connected = True
            except grpc.aio.AioRpcError as err:
                if self.connected:
                    log.warning("router unreachable (%s): routing from the last table", err.code().name)
                self.connected = False
            await asyncio.sleep(RECONNECT_S)

    def report(self, outcome: router_pb2.Outcome) -> None:
        self._pending.append(outcome)
        self._idle.clear()
        self._queued.set()
        if not outcome.success or outcome.failed_workers:
            self._urgent.set()

    async def send_outcomes(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._urgent.wait(), OUTCOME_BATCH_S)
            self._urgent.clear()
            while self._pending:
                batch = list(self._pending)
                try:
                    await self.stub.ReportOutcome(router_pb2.ReportOutcomeRequest(outcomes=batch),
                                                  timeout=DEADLINE_S)
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(RECONNECT_S)
                    continue
                for _ in batch:
                    self._pending.popleft()
            self._idle.set()

    async def flush(self, timeout: float = DEADLINE_S) -> bool:
        """Wait until every reported outcome reached the router, so /stats is current."""
        self._urgent.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True
