"""Envoy's admin interface, read over its unix socket: readiness, counters, Prometheus text.

Every read is bounded by a short deadline and a failure reads as "unknown" (None or ""),
never as an exception: Envoy being down or restarting is a state /health reports, and
/stats and /metrics still answer without it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import aiohttp

from services.api.routing import STATS_FILTER
from services.common.grpcclient import HEALTH_DEADLINE_S

log = logging.getLogger(__name__)
# The admin server answers in-process, from memory: a second is already a sick Envoy.
TIMEOUT = aiohttp.ClientTimeout(total=max(HEALTH_DEADLINE_S, 1.0))


class EnvoyAdmin:
    """One keep-alive session to the admin socket; created inside the running loop."""

    def __init__(self, socket_path: Path):
        self.session = aiohttp.ClientSession(
            "http://envoy-admin", connector=aiohttp.UnixConnector(path=str(socket_path)), timeout=TIMEOUT)

    async def _get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, str] | None:
        try:
            async with self.session.get(path, params=params) as resp:
                return resp.status, await resp.text()
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            log.debug("envoy admin GET %s: %s", path, err)
            return None

    async def ready(self) -> bool:
        """True once Envoy is LIVE: initialised (its first configuration fetched) and serving."""
        answer = await self._get("/ready")
        return answer is not None and answer[0] == 200 and answer[1].strip() == "LIVE"

    async def cluster_stats(self) -> list[dict] | None:
        """The upstream_rq_total and upstream_rq_5xx counters of local and remote clusters."""
        answer = await self._get("/stats", {"format": "json", "filter": STATS_FILTER, "type": "Counters"})
        if answer is None or answer[0] != 200:
            return None
        try:
            return list(json.loads(answer[1]).get("stats", []))
        except (ValueError, AttributeError):
            return None

    async def prometheus(self) -> str:
        """Envoy's own Prometheus exposition; "" when Envoy does not answer."""
        answer = await self._get("/stats/prometheus")
        return answer[1] if answer is not None and answer[0] == 200 else ""

    async def close(self) -> None:
        await self.session.close()
