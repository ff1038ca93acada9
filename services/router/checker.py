"""Active health checks of local backends: one GET of the health path per interval.

A backend's health answer may describe it (model, load_seconds, rss_bytes, inflight and
capacity, as the built-ins' do); that description is kept for /stats, /metrics and the
load the catalog announces. The models it serves come from its OpenAI `GET /v1/models`,
read again every MODELS_REFRESH_S (or from config, for a backend that cannot list
them; a 404 there: it serves none). Without a configured
health path, /health is tried and then / (vLLM and Text Embeddings Inference answer the
first, Ollama the second), so the usual servers work without settings.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from services.common import upstream
from services.common.config import ServiceConfig
from services.common.models import Model, from_model_list, load_percent
from services.router.health import HealthDamper

log = logging.getLogger(__name__)
DEFAULT_HEALTH_PATHS = ("/health", "/")
MODELS_REFRESH_S = 30.0


@dataclass
class BackendInfo:
    model: str = ""
    load_seconds: float = 0.0
    rss_bytes: int = 0
    inflight: int = 0  # requests it serves or holds now, as it reports them (0: it does not)
    capacity: int = 1  # requests it serves at once
    models: tuple[Model, ...] = ()

    def update(self, answer: bytes) -> None:
        try:
            described = json.loads(answer)
        except ValueError:
            return
        if isinstance(described, dict):
            self.model = str(described.get("model") or self.model)
            self.load_seconds = float(described.get("load_seconds") or self.load_seconds)
            self.rss_bytes = int(described.get("rss_bytes") or self.rss_bytes)
            self.inflight = max(0, int(described.get("inflight") or 0))
            self.capacity = max(1, int(described.get("capacity") or 1))

    @property
    def load_percent(self) -> int:
        return load_percent(self.inflight, self.capacity)

    def offered(self) -> tuple[tuple[Model, ...], int]:
        """What the catalog announces of this backend: a change is worth a new record."""
        return self.models, self.load_percent


async def probe(svc: ServiceConfig, session: aiohttp.ClientSession, path: str, info: BackendInfo,
                timeout_s: float) -> tuple[bool, str, int]:
    """(passed, why not, HTTP status or 0 when no answer)."""
    url = upstream.base_url(svc.upstream) + path
    try:
        async with asyncio.timeout(timeout_s), session.get(url, headers=svc.auth_headers) as reply:
            info.update(await reply.read())
    except TimeoutError:
        return False, f"health check failed: no answer within {timeout_s:g} s", 0
    except aiohttp.ClientError as err:
        return False, f"health check failed: the backend is not reachable ({err})", 0
    if reply.status < 300:
        return True, "", reply.status
    return False, f"health check answered HTTP {reply.status}", reply.status


async def check_once(svc: ServiceConfig, session: aiohttp.ClientSession, paths: list[str], info: BackendInfo,
                     timeout_s: float) -> tuple[bool, str]:
    """Probe the health path; while it is not settled, a 404 moves on to the next candidate."""
    ok, error, status = await probe(svc, session, paths[0], info, timeout_s)
    if status == 404 and len(paths) > 1:
        paths.pop(0)
        ok, error, _ = await probe(svc, session, paths[0], info, timeout_s)
    return ok, error


async def fetch_models(svc: ServiceConfig, session: aiohttp.ClientSession, timeout_s: float
                       ) -> tuple[Model, ...] | None:
    """The backend's models; () when it has no /v1/models (404); None when unknown now."""
    if svc.models:
        return svc.models
    try:
        async with asyncio.timeout(timeout_s), session.get(
                upstream.base_url(svc.upstream) + "/v1/models", headers=svc.auth_headers) as reply:
            answer = await reply.read()
    except (TimeoutError, aiohttp.ClientError):
        return None
    if reply.status == 404:
        return ()
    return from_model_list(answer) if reply.status == 200 else None


async def check_forever(svc: ServiceConfig, damper: HealthDamper, info: BackendInfo, interval_s: float,
                        on_change: Callable[[str, bool], None], on_offer: Callable[[str], None]) -> None:
    """`on_change`: its health flipped (after damping); `on_offer`: its models or load did."""
    timeout_s = max(interval_s, 1.0)
    session = upstream.session(svc.upstream)
    paths = [svc.health_path] if svc.health_path else list(DEFAULT_HEALTH_PATHS)
    models_due = 0.0
    try:
        while True:
            offered = info.offered()
            ok, error = await check_once(svc, session, paths, info, timeout_s)
            if ok and time.monotonic() >= models_due:
                models = await fetch_models(svc, session, timeout_s)
                info.models = info.models if models is None else models
                models_due = time.monotonic() + (MODELS_REFRESH_S if models is not None else interval_s)
            if damper.observe(ok, error):
                log.info("service %s is now %s%s", svc.name,
                         "healthy" if damper.healthy else "unhealthy", "" if ok else f" ({error})")
                on_change(svc.name, damper.healthy)
            if info.offered() != offered:
                on_offer(svc.name)
            await asyncio.sleep(interval_s)
    finally:
        await session.close()
