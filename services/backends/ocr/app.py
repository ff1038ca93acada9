"""HTTP face of the built-in `vision-ocr` backend (Starlette), served on a unix socket.

Routes:
  GET  /health  200 {"status": "ok", "engine": "tesseract X", "languages": [...]},
                or 503 when Tesseract did not run at start-up.
  POST /        JSON {"image_base64": "...", "lang": "eng"?} -> engine.recognise() result.
  POST /ocr     the same JSON, or multipart/form-data with file field `image` (+ `lang`).

Every error is {"error": {"code": "<snake_case>", "message": "<human text>"}}
(services/backends/http.py; no path of this backend is under /v1).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import pytesseract
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.backends.http import ApiError, error_handlers, error_response, read_json_object
from services.backends.ocr import engine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineStatus:
    """What the start-up probe learned: a version when Tesseract runs, else why not."""

    version: str | None
    languages: list[str] = field(default_factory=list)
    problem: str = ""


def probe_engine() -> EngineStatus:
    """Run Tesseract once to learn whether it works, its version and its languages."""
    try:
        version = str(pytesseract.get_tesseract_version())
        languages = engine.available_languages()
    except (pytesseract.TesseractNotFoundError, engine.EngineUnavailable, OSError) as exc:
        return EngineStatus(None, problem=f"tesseract is not available: {exc}")
    except SystemExit as exc:
        # pytesseract raises SystemExit for an unparsable or too old version string;
        # that must mark the backend unhealthy, not stop the server.
        return EngineStatus(None, problem=f"tesseract is not usable: {exc}")
    return EngineStatus(version, languages)


async def health(request: Request) -> JSONResponse:
    status: EngineStatus | None = getattr(request.app.state, "engine", None)
    if status is None:
        # Served without lifespan (some test drivers): probe now, once.
        status = request.app.state.engine = await anyio.to_thread.run_sync(probe_engine)
    if status.version is None:
        return error_response(request, 503, "engine_unavailable", status.problem)
    return JSONResponse(
        {"status": "ok", "engine": f"tesseract {status.version}", "languages": status.languages}
    )


async def ocr_json(request: Request) -> JSONResponse:
    image_bytes, lang = await _read_json_body(request)
    return JSONResponse(await _recognise(request, image_bytes, lang))


async def ocr(request: Request) -> JSONResponse:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        image_bytes, lang = await _read_multipart(request)
    else:
        image_bytes, lang = await _read_json_body(request)
    return JSONResponse(await _recognise(request, image_bytes, lang))


async def _read_json_body(request: Request) -> tuple[bytes, str]:
    body = await read_json_object(request)
    image = body.get("image_base64")
    if not isinstance(image, str):
        raise ApiError(400, "missing_image", "image_base64 (a base64 string) is required")
    return engine.decode_base64_image(image), _lang_of(body.get("lang"))


async def _read_multipart(request: Request) -> tuple[bytes, str]:
    try:
        async with request.form() as form:
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "missing_image", "multipart field 'image' (a file) is required")
            return await upload.read(), _lang_of(form.get("lang"))
    except HTTPException as exc:
        # Starlette turns malformed multipart into a 400 HTTPException; name it precisely.
        raise ApiError(400, "invalid_form", str(exc.detail)) from exc


def _lang_of(value: Any) -> str:
    if value is None or value == "":
        return "eng"
    if not isinstance(value, str):
        raise ApiError(400, "invalid_request", "lang must be a string such as 'eng'")
    return value


async def _recognise(request: Request, image_bytes: bytes, lang: str) -> dict[str, Any]:
    # Tesseract is CPU-bound and blocking: run it in a worker thread so the event loop
    # keeps answering /health, and cap concurrent runs so a burst cannot fork a
    # Tesseract per request.
    limiter = getattr(request.app.state, "ocr_limiter", None)  # None: served without lifespan
    return await anyio.to_thread.run_sync(engine.recognise, image_bytes, lang, limiter=limiter)


async def _engine_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, engine.BadImage):
        return error_response(request, 400, "bad_image", str(exc))
    if isinstance(exc, engine.UnknownLanguage):
        return error_response(request, 400, "unknown_language", str(exc))
    log.error("ocr engine failed: %s", exc)
    return error_response(request, 503, "engine_unavailable", str(exc))


def _usable_cpus() -> int:
    # The CPUs this process may run on (containers, taskset), not the machine's total.
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.ocr_limiter = anyio.CapacityLimiter(_usable_cpus())
    app.state.engine = status = await anyio.to_thread.run_sync(probe_engine)
    if status.version is None:
        log.error("vision-ocr starting unhealthy: %s", status.problem)
    else:
        log.info("vision-ocr ready: tesseract %s, languages %s", status.version, status.languages)
    yield


def create_app() -> Starlette:
    """The vision-ocr ASGI app; run it with lifespan on so the engine probe happens."""
    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/", ocr_json, methods=["POST"]),
            Route("/ocr", ocr, methods=["POST"]),
        ],
        exception_handlers={
            **error_handlers("vision-ocr"),
            engine.BadImage: _engine_error,
            engine.UnknownLanguage: _engine_error,
            engine.EngineUnavailable: _engine_error,
        },
        lifespan=_lifespan,
    )
