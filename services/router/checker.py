"""Active health checks of local backends: one GET of the health path per interval."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

from services.common.config import ServiceConfig
from services.common.upstream import open_session
from services.router.health import HealthDamper

log = logging.getLogger(__name__)


async def probe(session: aiohttp.ClientSession, url: str) -> tuple[bool, str]:
    try:
        async with session.get(url) as reply:
            await reply.read()
            if reply.status < 300:
                return True, ""
            return False, f"health check answered HTTP {reply.status}"
    except (TimeoutError, aiohttp.ClientError, OSError) as err:
        return False, f"health check failed: {type(err).__name__}: {err}".rstrip(": ")


async def check_forever(svc: ServiceConfig, damper: HealthDamper, interval_s: float,
                        on_change: Callable[[str, bool], None]) -> None:
    session, base = open_session(svc.upstream, timeout_s=max(interval_s, 1.0))
    try:
        while True:
            ok, error = await probe(session, base + svc.health_path)
            if damper.observe(ok, error):
                log.info("service %s is now %s%s", svc.name,
                         "healthy" if damper.healthy else "unhealthy", "" if ok else f" ({error})")
                on_change(svc.name, damper.healthy)
            await asyncio.sleep(interval_s)
    finally:
        await session.close()
