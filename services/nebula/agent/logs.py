"""nebula's JSON log (logging.format: json) parsed into our log, and what it says of tunnels.

nebula logs one JSON object per line: level, msg, time, and fields such as vpnIp. We
re-log each line under this module's logger at the matching level, and follow tunnels
from the messages nebula 1.6 writes at info level: a handshake completes with
"Handshake message received" (stage 2, we initiated) or "Handshake message sent" (stage
2, we answered); a tunnel ends with "Tunnel status" (state dead), "Close tunnel
received", or a certificate that is no longer valid. "Nebula interface is active" starts
a new nebula process, which has no tunnels yet.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
          "warning": logging.WARNING, "error": logging.ERROR, "fatal": logging.CRITICAL,
          "panic": logging.CRITICAL}
_CLOSED = {"Close tunnel received", "Remote certificate is no longer valid, tearing down the tunnel"}
_SKIP_FIELDS = {"level", "msg", "time"}
MAX_LINE = 64 * 1024


@dataclass(frozen=True)
class LogLine:
    level: int
    msg: str
    fields: dict[str, Any]


def parse(line: str) -> LogLine:
    """A nebula log line; a line that is not JSON (a panic trace) comes back as a warning."""
    try:
        doc = json.loads(line)
    except ValueError:
        return LogLine(logging.WARNING, line.rstrip(), {})
    if not isinstance(doc, dict):
        return LogLine(logging.WARNING, line.rstrip(), {})
    fields = {k: v for k, v in doc.items() if k not in _SKIP_FIELDS}
    return LogLine(LEVELS.get(str(doc.get("level")), logging.INFO), str(doc.get("msg", "")), fields)


def summary(entry: LogLine) -> str:
    parts = [f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in sorted(entry.fields.items())]
    return " ".join([entry.msg, *parts])


@dataclass
class Tunnels:
    """Overlay addresses with an established tunnel, as nebula's log tells them."""

    up: set[str] = field(default_factory=set)
    restarts: int = 0

    def feed(self, entry: LogLine) -> None:
        vpn_ip = entry.fields.get("vpnIp")
        stage = (entry.fields.get("handshake") or {}).get("stage") if isinstance(
            entry.fields.get("handshake"), dict) else None
        if entry.msg == "Nebula interface is active":
            self.up.clear()
            self.restarts += 1
        elif entry.msg in ("Handshake message received", "Handshake message sent") and stage == 2 and vpn_ip:
            self.up.add(vpn_ip)
        elif vpn_ip and (entry.msg in _CLOSED or (entry.msg == "Tunnel status" and (
                entry.fields.get("tunnelCheck") or {}).get("state") == "dead")):
            self.up.discard(vpn_ip)


class LogFollower:
    """Reads the lines appended to nebula's log file since the last call; notices rotation."""

    def __init__(self, path: Path):
        self.path = path
        self._inode: int | None = None
        self._offset = 0
        self._partial = b""

    def read_new(self) -> list[str]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        if stat.st_ino != self._inode or stat.st_size < self._offset:
            # supervisord rotated (or truncated) the file: start from the top of the new one.
            self._inode, self._offset, self._partial = stat.st_ino, 0, b""
        if stat.st_size == self._offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = self._partial + f.read(stat.st_size - self._offset)
        self._offset = stat.st_size
        *lines, self._partial = data.split(b"\n")
        if len(self._partial) > MAX_LINE:
            lines.append(self._partial)
            self._partial = b""
        return [line.decode(errors="replace") for line in lines if line.strip()]


class Throttle:
    """At most `burst` lines per (message, peer) per window: a revoked or misconfigured peer
    makes nebula log the same refusal twice a second, which would drown everything else,
    while a restart's few repeated lines still get through."""

    def __init__(self, window_s: float = 10.0, burst: int = 3, max_keys: int = 1024):
        self.window_s, self.burst, self.max_keys = window_s, burst, max_keys
        self._seen: dict[tuple[str, str], tuple[float, int, int]] = {}  # key -> (window start, lines, held)

    def admit(self, entry: LogLine, now: float) -> int | None:
        """None to hold the line back; else how many like it were held back before it."""
        key = (entry.msg, str(entry.fields.get("vpnIp", "")))
        start, lines, held = self._seen.get(key, (float("-inf"), 0, 0))
        if now - start >= self.window_s:
            if len(self._seen) >= self.max_keys:
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window_s}
            self._seen[key] = (now, 1, 0)
            return held
        if lines < self.burst:
            self._seen[key] = (start, lines + 1, held)
            return 0
        self._seen[key] = (start, lines, held + 1)
        return None


def relog(entry: LogLine, held_back: int = 0) -> None:
    if held_back:
        log.log(entry.level, "nebula: %s (and %d more like it)", summary(entry), held_back)
    else:
        log.log(entry.level, "nebula: %s", summary(entry))
