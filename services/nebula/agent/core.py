"""nebula-agent's core: bring nebula in line with the state directory, and say how it is.

`reconcile()` renders config.yml, makes sure supervisord runs nebula, and tells nebula of
changes (SIGHUP for what it reloads in place, a restart for the rest). `status()` answers
from what the agent can see, and names its source in each field's comment.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from services.common.config import Config
from services.common.rpc import nebula_pb2
from services.nebula import client
from services.nebula.agent import logs, supervise
from services.nebula.agent.logs import LogLine, Tunnels
from services.nebula.agent.nebmetrics import NebulaStats
from services.nebula.overlay import membership, node, records
from services.nebula.overlay.node import NodeState
from services.nebula.overlay.state import NebulaPaths, StateError

log = logging.getLogger(__name__)
NOT_A_MEMBER = ("no overlay configured on this node: peers reach it on its advertised URL. Run "
                "`meshworker init` on the first node, or the `meshworker join` command it prints")


def tun_present(dev: str) -> bool:
    """Whether nebula's tun device exists in this network namespace (nebula creates it on
    start and it vanishes when nebula exits)."""
    try:
        socket.if_nametoindex(dev)
    except OSError:
        return False
    return True


class Agent:
    def __init__(self, cfg: Config, supervisor: supervise.Supervisor | None = None,
                 clock: Callable[[], float] = time.time):
        self.cfg, self.clock = cfg, clock
        self.paths = NebulaPaths.of(cfg.state_dir)
        self.supervisor = supervisor or supervise.Supervisor(cfg)
        self.state: NodeState | None = None
        self.error = ""
        self.tunnels = Tunnels()
        self.stats = NebulaStats()
        self._lock = asyncio.Lock()
        self._program_applied = False
        self._record_failing = False
        self.last_nebula_error = ""  # from nebula's log; cleared when its interface comes up

    async def reconcile(self) -> str:
        """Re-read the state directory and apply it; the action nebula was given."""
        async with self._lock:
            try:
                self.state = await asyncio.to_thread(node.load, self.paths)
                self.error = ""
            except StateError as err:
                self.error = str(err)
                log.error("overlay state unusable, nebula left as it is: %s", err)
                return "none"
            if self.state is None:
                return "none"
            return await asyncio.to_thread(self._apply, self.state)

    def _apply(self, state: NodeState) -> str:
        action = node.write_config(self.cfg, self.paths, state)
        if not self.supervisor.available():
            return action
        if supervise.write_program(self.cfg) or not self._program_applied:
            out = self.supervisor.update()
            self._program_applied = True
            log.info("nebula program: %s", out or "unchanged")
            if out:
                return "start"
        if action != "none":
            log.info("nebula config changed: %s", action)
            self.supervisor.apply(action)
        return action

    async def refresh_record(self) -> bool:
        """Take a newer mesh record (from disk on the CA holder, else from its endpoint)."""
        state = self.state
        if state is None:
            return False
        try:
            if self.paths.is_authority():
                candidate, signed = await asyncio.to_thread(membership.load_record, self.paths, state.member)
            else:
                candidate, signed = await asyncio.to_thread(fetch_record, state)
        except (StateError, client.JoinError, records.RecordError) as err:
            # Once per outage, not every interval: the CA holder may be down for a while.
            log.log(logging.DEBUG if self._record_failing else logging.WARNING,
                    "mesh record not refreshed (keeping serial %d): %s", state.record.serial, err)
            self._record_failing = True
            return False
        self._record_failing = False
        if not records.newer(candidate, state.record):
            return False
        if not self.paths.is_authority():
            await asyncio.to_thread(membership.save_record, self.paths, signed)
        log.info("mesh record %d: %d lighthouses, %d blocked certificates", candidate.serial,
                 len(candidate.lighthouses), len(candidate.blocklist))
        await self.reconcile()
        return True

    def note_nebula_log(self, entry: LogLine) -> None:
        if entry.msg == "Nebula interface is active":
            self.last_nebula_error = ""
        elif entry.level >= logging.ERROR:
            self.last_nebula_error = logs.summary(entry)[:300]

    def sync_interval(self) -> float:
        return float(self.state.record.sync_interval_s) if self.state else 5.0

    def status(self) -> nebula_pb2.StatusResponse:
        if self.error:
            return nebula_pb2.StatusResponse(enabled=True, reason=self.error)
        if self.state is None:
            return nebula_pb2.StatusResponse(enabled=False, reason=NOT_A_MEMBER)
        s, now = self.state, self.clock()
        revoked = s.cert.fingerprint in s.record.blocklist
        # overlay_ip: the address in our certificate, reported only while nebula's tun device exists.
        running = tun_present(node.tun_dev(self.cfg))
        reason = status_reason(s, running, revoked, now, node.tun_dev(self.cfg), self.last_nebula_error)
        others = [ip for ip in s.record.lighthouses if ip != s.member.overlay_ip]
        # tunnels_up: nebula's own gauge (hostmap.main.hosts, refreshed every stats interval);
        # without stats, the tunnels nebula's log says were made and not yet torn down.
        tunnels = self.stats.tunnels() if running and self.stats.up else len(self.tunnels.up)
        return nebula_pb2.StatusResponse(
            enabled=True, overlay_ip="" if reason else s.member.overlay_ip, reason=reason,
            cert_expires_unix=s.cert.not_after,
            # lighthouse_reachable: a lighthouse is ourselves, or one we hold a tunnel to (log).
            lighthouse_reachable=running and (s.member.lighthouse
                                              or any(ip in self.tunnels.up for ip in others)),
            tunnels_up=tunnels if running else 0, network=s.member.network,
            ca_fingerprint=s.member.ca_fingerprint, cert_name=s.cert.name,
            lighthouses=sorted(s.record.lighthouses), am_lighthouse=s.member.lighthouse,
            am_authority=self.paths.is_authority(), record_serial=s.record.serial,
            blocked_certs=len(s.record.blocklist), revoked=revoked)


def status_reason(s: NodeState, running: bool, revoked: bool, now: float, dev: str,
                  last_error: str = "") -> str:
    if revoked:
        return f"this node's certificate ({s.cert.fingerprint[:16]}…) was revoked by the mesh's CA holder"
    if s.cert.not_after <= now:
        expired = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(s.cert.not_after))
        return f"this node's certificate expired at {expired}; join again with a new token"
    if not running:
        said = f"; nebula's last error: {last_error}" if last_error else ""
        return f"nebula is not running (its tun device {dev} is missing); supervisord restarts it{said}"
    return ""


def fetch_record(state: NodeState) -> tuple[records.MeshRecord, dict]:
    """The CA holder's current record over the pinned HTTPS endpoint (blocking)."""
    address, status, doc = client.first_answering(list(state.member.enroll_addresses),
                                                  state.member.tls_sha256, "GET", "/v1/record")
    if status != 200 or not isinstance(doc, dict):
        raise client.JoinError(f"{address} did not send the mesh record: {client.refusal(status, doc)}")
    signed = doc.get("record")
    return records.verify(signed, state.member.ca_public_key, state.member.ca_fingerprint), signed
