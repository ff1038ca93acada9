"""Envoy's admin interface, read over its unix socket: readiness, listeners, stats.

Every read is bounded by a short deadline and a failure reads as "unknown" (None or ""),
never as an exception: Envoy being down or restarting is a state callers report.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import aiohttp

log = logging.getLogger(__name__)
# The admin server answers in-process, from memory: a second is already a sick Envoy.
TIMEOUT = aiohttp.ClientTimeout(total=1.0)


class EnvoyAdmin:
    """One keep-alive session to the admin socket; created inside the running loop."""

    def __init__(self, socket_path: Path):
        self.session = aiohttp.ClientSession(
            "http://envoy-admin", connector=aiohttp.UnixConnector(path=str(socket_path)), timeout=TIMEOUT)

    async def get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, str] | None:
        try:
            async with self.session.get(path, params=params) as resp:
                return resp.status, await resp.text()
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            log.debug("envoy admin GET %s: %s", path, err)
            return None

    async def get_json(self, path: str, params: dict[str, str] | None = None) -> dict | None:
        answer = await self.get(path, {**(params or {}), "format": "json"})
        if answer is None or answer[0] != 200:
            return None
        try:
            found = json.loads(answer[1])
        except ValueError:
            return None
        return found if isinstance(found, dict) else None

    async def ready(self) -> bool:
        """True once Envoy is LIVE: initialised (its first configuration fetched) and serving."""
        answer = await self.get("/ready")
        return answer is not None and answer[0] == 200 and answer[1].strip() == "LIVE"

    async def listeners(self) -> dict | None:
        return await self.get_json("/listeners")

    async def counters(self, pattern: str) -> list[dict] | None:
        """Counters whose name matches the regex `pattern` ({"name", "value"} each)."""
        found = await self.get_json("/stats", {"filter": pattern, "type": "Counters"})
        stats = found.get("stats") if found is not None else None
        return list(stats) if isinstance(stats, list) else None

    async def prometheus(self) -> str:
        """Envoy's own Prometheus exposition; "" when Envoy does not answer."""
        answer = await self.get("/stats/prometheus")
        return answer[1] if answer is not None and answer[0] == 200 else ""

    async def close(self) -> None:
        await self.session.close()
