"""The nebula-agent process: keeps nebula in line with the state directory and reports on it.

Background tasks, all owned here and cancelled on shutdown: follow nebula's log (re-log
it, track tunnels), scrape nebula's stats, refresh the CA-signed mesh record. On the CA
holder it also serves the enrollment endpoint. nebula itself is a separate supervisord
program: when this process dies, the overlay stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp
from prometheus_client import CollectorRegistry, Gauge

from services.common.config import Config
from services.common.grpcserver import ComponentServer
from services.common.rpc import nebula_pb2, nebula_pb2_grpc
from services.nebula.agent import logs
from services.nebula.agent.core import Agent
from services.nebula.authority import server
from services.nebula.overlay import node

log = logging.getLogger(__name__)
LOG_POLL_S = 0.5
RESTART_DELAY_S = 2.0
STATS_POLL_S = 2.0  # nebula refreshes its gauges every stats.interval (2 s, render.py)


class NebulaAgentServicer(nebula_pb2_grpc.NebulaAgentServicer):
    def __init__(self, cfg: Config, registry: CollectorRegistry, agent: Agent | None = None,
                 reload: Callable[[], Awaitable[str]] | None = None):
        self.agent = agent or Agent(cfg)
        self.reload = reload or self.agent.reconcile
        Gauge("meshworker_nebula_overlay_up", "1 when this node's overlay address is up",
              registry=registry).set_function(lambda: float(bool(self.agent.status().overlay_ip)))
        Gauge("meshworker_nebula_cert_expiry_timestamp_seconds", "When this node's Nebula certificate "
              "expires (0: no certificate)", registry=registry).set_function(
            lambda: float(self.agent.status().cert_expires_unix))
        Gauge("meshworker_nebula_lighthouse_reachable", "1 when a lighthouse is reachable over the overlay",
              registry=registry).set_function(lambda: float(self.agent.status().lighthouse_reachable))
        registry.register(self.agent.stats)

    async def Status(self, request, context):
        return self.agent.status()

    async def Reload(self, request, context):
        action = await self.reload()
        return nebula_pb2.ReloadResponse(nebula_action=action, status=self.agent.status())


async def follow_log(agent: Agent) -> None:
    follower, throttle = logs.LogFollower(node.log_path(agent.cfg)), logs.Throttle()
    for line in follower.read_new():  # what nebula wrote before we started: state only
        agent.tunnels.feed(logs.parse(line))
    while True:
        for line in follower.read_new():
            entry = logs.parse(line)
            agent.tunnels.feed(entry)
            agent.note_nebula_log(entry)
            held_back = throttle.admit(entry, time.monotonic())
            if held_back is not None:
                logs.relog(entry, held_back)
        await asyncio.sleep(LOG_POLL_S)


async def scrape_stats(agent: Agent) -> None:
    url = f"http://127.0.0.1:{agent.cfg.nebula_port}/metrics"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            text = None
            if agent.state is not None and agent.cfg.nebula_port:
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(url) as reply:
                        text = await reply.text() if reply.status == 200 else None
            agent.stats.update(text)
            await asyncio.sleep(STATS_POLL_S)


class Enrollment:
    """The CA holder's enrollment endpoint, started once this node holds the CA."""

    def __init__(self, agent: Agent, registry: CollectorRegistry, wake: asyncio.Event):
        self.agent, self.runner = agent, None
        self.app = server.EnrollmentApp(agent.paths, registry, on_record_change=wake.set)

    async def ensure(self) -> None:
        state = self.agent.state
        if self.runner is not None or state is None or not self.agent.paths.is_authority():
            return
        try:
            self.runner = await server.start(self.app, "0.0.0.0", state.member.enroll_port)
        except OSError as err:
            log.error("cannot serve enrollment on port %d: %s", state.member.enroll_port, err)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def sync_records(agent: Agent, enrollment: Enrollment, wake: asyncio.Event) -> None:
    """Every record interval (or when woken), take a newer mesh record and apply it."""
    while True:
        if agent.state is None and agent.paths.is_member():
            await agent.reconcile()  # joined while we were not told (the CLI could not reach us)
        await enrollment.ensure()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=agent.sync_interval())
        wake.clear()
        await agent.refresh_record()


async def keep_running(name: str, loop: Callable[[], Awaitable[None]]) -> None:
    """Run a background loop; if it fails unexpectedly, log why and start it again."""
    while True:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; restarting it in %.0f s", name, RESTART_DELAY_S)
        await asyncio.sleep(RESTART_DELAY_S)


async def serve(cfg: Config) -> None:
    registry = CollectorRegistry()
    server_ = ComponentServer(cfg, "nebula-agent", registry)
    agent, wake = Agent(cfg), asyncio.Event()
    enrollment = Enrollment(agent, registry, wake)

    async def reload() -> str:
        action = await agent.reconcile()
        await enrollment.ensure()
        wake.set()
        return action

    servicer = NebulaAgentServicer(cfg, registry, agent, reload)
    server_.add(nebula_pb2_grpc.add_NebulaAgentServicer_to_server, servicer,
                nebula_pb2.DESCRIPTOR.services_by_name["NebulaAgent"].full_name)
    await server_.start()
    await agent.reconcile()
    loops = {"nebula-log": lambda: follow_log(agent), "nebula-stats": lambda: scrape_stats(agent),
             "mesh-record": lambda: sync_records(agent, enrollment, wake)}
    tasks = [asyncio.create_task(keep_running(name, loop), name=name) for name, loop in loops.items()]
    await server_.set_serving(True)
    try:
        await server_.run_until_stopped()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await enrollment.stop()
