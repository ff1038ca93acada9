"""HTTP face of the built-in `rag-embeddings` backend (Starlette), served on a unix socket.

Routes:
  GET  /health         200 {"status": "ok", "model", "dim", "max_tokens", "load_seconds",
                       "rss_bytes", "inflight", "capacity"} once the model is loaded; 503
                       `model_loading` before, `model_unavailable` (with the reason) when
                       it cannot load.
  POST /               {"texts": [str, ...]} -> {"embeddings": [[float]], "model", "dim"}
                       (the seed's envelope inside `data` at the api).
  POST /v1/embeddings  the OpenAI embeddings API: {"input": str | [str], "model"?,
                       "encoding_format"?: "float" | "base64", "dimensions"?} ->
                       {"object": "list", "data": [{"object": "embedding", "index",
                       "embedding"}], "model", "usage": {"prompt_tokens", "total_tokens"}};
                       a `model` other than this one's id is a 404 `model_not_found`.
  GET  /v1/models      the OpenAI model list, with this one model (kind "embedding").
  GET  /metrics        Prometheus text (services/backends/model_metrics.py).

Vectors have unit length, so a dot product is the cosine similarity. Texts longer than
the model reads (`max_tokens` word pieces) are cut, as sentence-transformers does. Bad
input is a 400 in the error shape of its path (services/backends/http.py): no texts, a
text that is not a string, more texts than `max_texts`, more characters than `max_chars`.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.backends.embeddings import engine
from services.backends.http import (
    ApiError,
    ModelSlot,
    check_model,
    model_app,
    model_list,
    read_json_object,
)
from services.backends.model_metrics import ModelMetrics

log = logging.getLogger(__name__)

SERVICE = "rag-embeddings"
DEFAULT_MAX_TEXTS = 256
# Characters over all texts of one request: 256 texts of ~1 KiB, more than the model
# reads of each (256 word pieces), so only a request that cannot be meant is refused.
DEFAULT_MAX_CHARS = 256 * 1024
ENDPOINTS = {"/": "simple", "/v1/embeddings": "embedding"}


async def health(request: Request) -> JSONResponse:
    slot: ModelSlot[engine.Embedder] = request.app.state.slot
    model = slot.get()
    return slot.health({"model": model.name, "dim": model.dim, "max_tokens": model.max_tokens,
                        "inflight": request.app.state.metrics.inflight,
                        "capacity": request.app.state.limiter.total_tokens})


async def models(request: Request) -> JSONResponse:
    model = request.app.state.slot.get()
    return model_list(model.name, "embedding", model.max_tokens)


async def embed_texts(request: Request) -> JSONResponse:
    body = await read_json_object(request)
    if "texts" not in body:
        raise ApiError(400, "invalid_request", "texts (a list of strings) is required", "texts")
    texts = _checked_texts(request, body["texts"], "texts")
    model, result = await _embed(request, texts)
    return JSONResponse({"embeddings": result.vectors.tolist(), "model": model.name, "dim": model.dim})


async def openai_embeddings(request: Request) -> JSONResponse:
    body = await read_json_object(request)
    check_model(body, request.app.state.slot.get().name)
    if "input" not in body:
        raise ApiError(400, "invalid_request", "input (a string or a list of strings) is required", "input")
    raw = body["input"]
    texts = _checked_texts(request, [raw] if isinstance(raw, str) else raw, "input")
    encode = _encoder(body.get("encoding_format", "float"))
    _check_dimensions(request, body.get("dimensions"))
    model, result = await _embed(request, texts)
    data = [{"object": "embedding", "index": i, "embedding": encode(vector)}
            for i, vector in enumerate(result.vectors)]
    usage = {"prompt_tokens": result.tokens, "total_tokens": result.tokens}
    return JSONResponse({"object": "list", "data": data, "model": model.name, "usage": usage})


def _checked_texts(request: Request, value: Any, field: str) -> list[str]:
    """The texts of a request, or a 400 that says which limit they break."""
    if not isinstance(value, list):
        raise ApiError(400, "invalid_request", f"{field} must be a list of strings", field)
    if not value:
        raise ApiError(400, "empty_input", f"{field} is empty: give at least one text", field)
    limit = request.app.state.max_texts
    if len(value) > limit:
        raise ApiError(400, "too_many_texts", f"{field} has {len(value)} texts; at most {limit} per request",
                       field)
    for i, text in enumerate(value):
        if not isinstance(text, str):
            # Token-id arrays (allowed by OpenAI) are refused too: ids of another tokenizer
            # would embed nonsense.
            raise ApiError(400, "invalid_text", f"{field}[{i}] is not a string", field)
    chars, max_chars = sum(map(len, value)), request.app.state.max_chars
    if chars > max_chars:
        raise ApiError(400, "input_too_long",
                       f"{field} has {chars} characters in all; at most {max_chars} per request", field)
    return value


def _encoder(encoding_format: Any) -> Callable[[Any], Any]:
    if encoding_format == "float":
        return lambda vector: vector.tolist()
    if encoding_format == "base64":
        # What the official OpenAI clients ask for by default: little-endian float32 bytes.
        return lambda vector: base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    raise ApiError(400, "invalid_request", "encoding_format must be 'float' or 'base64'", "encoding_format")


def _check_dimensions(request: Request, dimensions: Any) -> None:
    if dimensions is None:
        return
    dim = request.app.state.slot.get().dim
    if dimensions != dim or isinstance(dimensions, bool):
        raise ApiError(400, "invalid_request", f"dimensions must be {dim} (this model's size) or absent",
                       "dimensions")


async def _embed(request: Request, texts: list[str]) -> tuple[engine.Embedder, engine.Embeddings]:
    model = request.app.state.slot.get()
    # The model is CPU-bound and blocking: a worker thread keeps /health answering, and a
    # limiter of one runs one forward at a time, since each already uses every core.
    result = await anyio.to_thread.run_sync(model.embed, texts, limiter=request.app.state.limiter)
    request.app.state.metrics.prompt_tokens.labels(model.name).inc(result.tokens)
    log.debug("embedded %d texts, %d tokens", len(texts), result.tokens)
    return model, result


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.limiter = anyio.CapacityLimiter(1)
    app.state.slot.start(app.state.load)
    yield


def create_app(
    load: Callable[[], engine.Embedder] = engine.load,
    max_texts: int = DEFAULT_MAX_TEXTS,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> Starlette:
    """The rag-embeddings ASGI app; run it with lifespan on, which starts loading the model."""
    slot = ModelSlot[engine.Embedder](SERVICE)
    metrics = ModelMetrics(slot, ENDPOINTS)
    return model_app(slot, metrics, [Route("/health", health, methods=["GET"]),
                                     Route("/", embed_texts, methods=["POST"]),
                                     Route("/v1/embeddings", openai_embeddings, methods=["POST"]),
                                     Route("/v1/models", models, methods=["GET"])],
                     _lifespan, load, max_texts=max_texts, max_chars=max_chars)
