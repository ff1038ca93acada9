"""What every built-in backend program shares: its error shape, JSON bodies, a model
loaded in the background with a health answer, and serving on a unix socket.

- `ApiError` / `error_handlers`: every error a backend returns has one shape, chosen by
  path (services/common/errors.py, DESIGN.md "Errors"), Starlette's own 404/405 and unexpected
  exceptions included: under /v1 OpenAI's `{"error": {"message", "type", "param",
  "code"}}`, elsewhere the project's `{"error": {"code": "<snake_case>", "message"}}`.
- `read_json_object`: the request body as a JSON object, or a 400 naming what is wrong.
- `check_model`: OpenAI's `model` field against the one model a backend serves.
- `ModelSlot`: one model, loaded once in a daemon thread at start-up, so the socket is
  bound (and answers 503 `model_loading`) while a model takes seconds to load, and a
  SIGTERM during the load is not held up by it; `/health` is 200 only once it is loaded,
  with load time and resident memory (`rss_bytes`).
- `model_list`: the OpenAI `GET /v1/models` answer, with what the mesh router needs.
- `serve_app`: uvicorn on a private unix socket, after removing a stale socket file.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Lifespan

from services.common import errors, unix_socket

if TYPE_CHECKING:
    from services.backends.model_metrics import ModelMetrics

log = logging.getLogger(__name__)


class Model(Protocol):
    name: str  # the id clients give in OpenAI's `model` field


ModelT = TypeVar("ModelT", bound=Model)
GRACEFUL_STOP_SECONDS = 5
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


class ApiError(Exception):
    """A request the backend refuses; becomes the JSON error body with this status."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param  # the offending request field, where there is one


def error_response(request: Request, status: int, code: str, message: str,
                   param: str | None = None) -> JSONResponse:
    body = errors.for_path(request.url.path, status, code, message, param)
    return JSONResponse(body, status_code=status)


async def read_json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object; 400 `invalid_json` or `invalid_request` otherwise."""
    try:
        body = json.loads(await request.body())
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "request body must be a JSON object")
    return body


def error_handlers(service: str) -> dict[Any, Callable[..., Any]]:
    """Starlette exception handlers that keep the one error shape for `service`."""

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(request, exc.status, exc.code, exc.message, exc.param)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's own 404/405 etc. would be plain text.
        assert isinstance(exc, HTTPException)
        code = _HTTP_CODES.get(exc.status_code, "bad_request")
        response = error_response(request, exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})  # e.g. Allow on 405
        return response

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(request, 500, "internal_error", f"internal error in the {service} backend")

    return {ApiError: api_error, HTTPException: http_error, 500: internal_error}


def check_model(body: dict[str, Any], served: str) -> None:
    """Refuse a request for another model than `served` with OpenAI's 404 `model_not_found`,
    so a request that reaches the wrong backend is never answered by the model it has.
    A missing or null `model` means this backend's one model: callers from before the
    mesh routed by model send none."""
    wanted = body.get("model")
    if wanted is None or wanted == served:
        return
    if not isinstance(wanted, str):
        raise ApiError(400, "invalid_request", "model must be a string", param="model")
    raise ApiError(404, "model_not_found", f"the model `{wanted}` does not exist here; this backend "
                   f"serves `{served}`", param="model")


def model_list(model_id: str, kind: Literal["chat", "embedding"], context_length: int) -> JSONResponse:
    """The OpenAI `GET /v1/models` answer for a backend that serves one model; clients
    and health probes of OpenAI-compatible servers (vLLM, Ollama) ask it first. `kind`
    and `context_length` (tokens) are ours: the mesh router picks providers by them."""
    return JSONResponse({"object": "list", "data": [
        {"id": model_id, "object": "model", "created": 0, "owned_by": "meshworker",
         "kind": kind, "context_length": context_length}]})


def rss_bytes() -> int:
    """Resident memory of this process now (not the peak), from /proc; 0 where there is none."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _trim_heap() -> None:
    """Give the heap a load freed back to the OS (glibc's malloc_trim).

    Loading unpacks and converts weights through temporary copies; glibc keeps the freed
    pages, and the LLM backend measured 900 MiB resident after its load, 685 MiB after
    a trim. Elsewhere (musl, macOS) there is no such call, and nothing to do.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        log.debug("malloc_trim is not available here")


class ModelSlot(Generic[ModelT]):
    """The one model a backend serves: loading, loaded, or failed with a reason.

    `start()` loads it in a daemon thread; `get()` gives it or raises a 503 `ApiError`.
    Attributes are written by the loader thread and read by the event loop: each is one
    reference assignment, and `model` is assigned last, so a reader never sees half a load.
    """

    def __init__(self, service: str):
        self.service = service
        self.model: ModelT | None = None
        self.problem = ""
        self.load_seconds = 0.0
        self._done = threading.Event()

    def start(self, load: Callable[[], ModelT]) -> None:
        # A daemon thread rather than the loop's executor: asyncio.run() waits for executor
        # threads at exit, which would hold a SIGTERM during a load until the load ends.
        threading.Thread(target=self._load, args=(load,), name=f"{self.service}-load", daemon=True).start()

    def _load(self, load: Callable[[], ModelT]) -> None:
        started = time.monotonic()
        try:
            model = load()
        except Exception as exc:  # any failure means "unhealthy, and why"
            log.exception("%s model failed to load", self.service)
            self.problem = f"model failed to load: {exc}"
        else:
            self.load_seconds = round(time.monotonic() - started, 3)
            _trim_heap()
            self.model = model
            log.info("%s model loaded in %.1fs, rss %d MiB", self.service, self.load_seconds, rss_bytes() >> 20)
        finally:
            self._done.set()

    @property
    def name(self) -> str | None:
        """The model's id once it is loaded."""
        return None if self.model is None else self.model.name

    def get(self) -> ModelT:
        if self.model is not None:
            return self.model
        if self._done.is_set():
            raise ApiError(503, "model_unavailable", f"{self.service}: {self.problem}")
        raise ApiError(503, "model_loading", f"{self.service}: the model is still loading")

    def health(self, details: Mapping[str, Any]) -> JSONResponse:
        """200 with the model's details, load time and memory; the 503 of `get()` before."""
        self.get()
        return JSONResponse({"status": "ok", **details, "load_seconds": self.load_seconds,
                             "rss_bytes": rss_bytes()})


def model_app(slot: ModelSlot, metrics: ModelMetrics, routes: list[BaseRoute], lifespan: Lifespan,
              load: Callable[[], Any], **state: Any) -> Starlette:
    """A built-in model backend's app: its routes and /metrics, the metrics middleware, errors
    in the mesh's shape, and `lifespan`, which starts loading the model. Its handlers read
    the slot, the metrics, the loader and `state` from app.state."""
    app = Starlette(routes=[*routes, Route("/metrics", metrics.endpoint, methods=["GET"])],
                    middleware=[Middleware(metrics.middleware)], exception_handlers=error_handlers(slot.service),
                    lifespan=lifespan)
    app.state.slot, app.state.metrics, app.state.load = slot, metrics, load
    for name, value in state.items():
        setattr(app.state, name, value)
    return app


def serve_app(app: ASGIApp, socket_path: str, log_level: str = "info") -> None:
    """Run `app` on the unix socket `socket_path` until SIGTERM/SIGINT.

    Uvicorn owns the loop: on a signal it stops accepting, lets requests in flight
    finish, runs lifespan shutdown, then re-raises the signal, so the process ends killed
    by SIGTERM (status -15 / 143) rather than with exit status 0. The socket is bound
    here, not by uvicorn (`uds=` makes it mode 0666, open to every local user).
    """
    sock = unix_socket.listening(Path(socket_path))
    config = uvicorn.Config(
        app, log_level=log_level.lower(), access_log=False, lifespan="on",
        log_config=None,  # keep the CLI's logging, which prefixes lines with the program name
        # A long LLM stream would otherwise hold a stop until it ends, past supervisord's
        # stopwaitsecs (10 s) and into a SIGKILL; cancelled, it stops at its next token.
        timeout_graceful_shutdown=GRACEFUL_STOP_SECONDS,
    )
    log.info("serving on unix:%s", socket_path)
    uvicorn.Server(config).run(sockets=[sock])
