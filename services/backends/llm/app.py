"""HTTP face of the built-in `llm-inference` backend (Starlette), served on a unix socket.

Routes:
  GET  /health               200 {"status": "ok", "model", "dtype", "context_tokens",
                             "max_tokens_limit", "load_seconds", "rss_bytes", "busy",
                             "generations", "cancelled", "inflight", "capacity"} once the
                             model is loaded; 503 `model_loading` before,
                             `model_unavailable` if it cannot load.
  POST /                     the seed's form {"prompt", "max_tokens"?} -> {"text", "usage":
                             {"prompt_tokens", "completion_tokens", "total_tokens"}, "model",
                             "finish_reason"}.
  POST /v1/chat/completions  the OpenAI APIs (services/backends/llm/api.py), with
  POST /v1/completions       `"stream": true` as server-sent events, then `data: [DONE]`;
                             a `model` other than this one's id is a 404 `model_not_found`.
  GET  /v1/models            the OpenAI model list, with this one model (kind "chat").
  GET  /metrics              Prometheus text (services/backends/model_metrics.py).

One model on a few cores: generations run one at a time (`Runner`), each in a worker
thread that hands its text to the event loop token by token, so /health keeps answering
and a stream carries each token as it is made. A client that goes away stops its
generation at the next token, streamed or not. max_tokens outside 1..`max_tokens_limit`
and a prompt that leaves no room for max_tokens in the context are 400s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from starlette.types import Send

from services.backends.http import (
    ApiError,
    ModelSlot,
    check_model,
    model_app,
    model_list,
    read_json_object,
)
from services.backends.llm import api, engine
from services.backends.llm.engine import Completion, Sampling, TextModel
from services.backends.model_metrics import GenerationMetrics
from services.common import errors

log = logging.getLogger(__name__)

SERVICE = "llm-inference"
CAPACITY = 1  # generations at once: the Runner's one lock
ENDPOINTS = {"/": "simple", "/v1/chat/completions": "chat", "/v1/completions": "completion"}


class Runner:
    """Runs generations on the one model one at a time, each in a worker thread, and
    streams each one's text back to the event loop through an asyncio queue."""

    def __init__(self, metrics: GenerationMetrics) -> None:
        self._lock = asyncio.Lock()
        self._metrics = metrics
        self.busy = False
        self.generations = 0
        self.cancelled = 0

    async def stream(self, model: TextModel, ids: list[int], sampling: Sampling, cancel: threading.Event,
                     started: float) -> AsyncIterator[str | Completion]:
        """Pieces of text as they come, then the `Completion`, timed in the metrics from
        `started` (the request's arrival, on the monotonic clock). Leaving early (a closed
        generator) sets `cancel`, which stops the generation at its next token."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | Completion | Exception] = asyncio.Queue()

        def push(item: str | Completion | Exception) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> Completion | None:
            try:
                done = model.generate(ids, sampling, push, cancel)
            except Exception as exc:  # noqa: BLE001 - handed to the request, which reports it
                push(exc)
                return None
            push(done)
            return done

        await self._lock.acquire()
        # The lock is released when the thread ends, not when this generator does: a
        # consumer that leaves early must not let the next generation start beside it.
        self.busy = True
        loop.run_in_executor(None, work).add_done_callback(self._finished)
        try:
            while not isinstance(item := await queue.get(), Completion):
                if isinstance(item, Exception):
                    raise item
                yield item
            self._metrics.generated(model.name, item.prompt_tokens, item.completion_tokens, started,
                                    item.first_token_at, time.monotonic())
            yield item
        finally:
            cancel.set()  # no-op once finished

    def _finished(self, future: asyncio.Future[Completion | None]) -> None:
        self.busy = False
        self.generations += 1
        done = future.result()
        if done is not None and done.finish_reason == "cancelled":
            self.cancelled += 1
            log.info("generation cancelled after %d tokens", done.completion_tokens)
        self._lock.release()


class EventStream(StreamingResponse):
    """A server-sent event stream that always closes its body generator, so the cleanup
    of a stream whose client went away (which stops the generation) runs at once rather
    than whenever the abandoned generator is garbage-collected."""

    media_type = "text/event-stream"

    async def stream_response(self, send: Send) -> None:
        body = self.body_iterator
        assert isinstance(body, AsyncIterator) and hasattr(body, "aclose")
        async with contextlib.aclosing(body):
            await super().stream_response(send)


async def health(request: Request) -> JSONResponse:
    slot: ModelSlot[TextModel] = request.app.state.slot
    model, runner = slot.get(), request.app.state.runner
    return slot.health({
        "model": model.name, "dtype": model.dtype, "context_tokens": _context(request, model),
        "max_tokens_limit": request.app.state.max_tokens_limit, "busy": runner.busy,
        "generations": runner.generations, "cancelled": runner.cancelled,
        "inflight": request.app.state.metrics.inflight, "capacity": CAPACITY,
    })


async def models(request: Request) -> JSONResponse:
    model = request.app.state.slot.get()
    return model_list(model.name, "chat", _context(request, model))


def _handler(kind: str) -> Callable[[Request], Any]:
    async def handle(request: Request) -> JSONResponse | EventStream:
        body = await read_json_object(request)
        model = request.app.state.slot.get()
        if kind != "simple":  # the seed's form names no model
            check_model(body, model.name)
        job = api.parse(kind, body, request.app.state.max_tokens_limit)
        ids = await _prompt_ids(request, model, job)
        if job.stream:
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            return EventStream(_events(request, job, model, ids), headers=headers)
        done = await _complete(request, model, ids, job)
        return JSONResponse(api.response(job, model.name, done))

    return handle


def _context(request: Request, model: TextModel) -> int:
    return min(model.context_tokens, request.app.state.context_tokens or model.context_tokens)


async def _prompt_ids(request: Request, model: TextModel, job: api.Job) -> list[int]:
    """The prompt's token ids; a 400 when it leaves no room for max_tokens in the context."""
    # Tokenizing a long prompt takes milliseconds: off the event loop, like the model.
    if job.kind == "completion":
        ids = await anyio.to_thread.run_sync(model.text_ids, job.prompt)
    else:
        messages = job.messages or [{"role": "user", "content": job.prompt}]
        ids = await anyio.to_thread.run_sync(model.chat_ids, messages)
    context, wanted = _context(request, model), job.sampling.max_tokens
    if len(ids) + wanted > context:
        raise ApiError(400, "context_length_exceeded",
                       f"this model's context is {context} tokens; the prompt has {len(ids)} "
                       f"and max_tokens asks for {wanted} more",
                       "messages" if job.kind == "chat" else "prompt")
    return ids


async def _complete(request: Request, model: TextModel, ids: list[int], job: api.Job) -> Completion:
    """Generate the whole answer; a client that disconnects meanwhile stops it."""
    cancel = threading.Event()
    watcher = asyncio.create_task(_cancel_on_disconnect(request, cancel))
    items = request.app.state.runner.stream(model, ids, job.sampling, cancel, job.started)
    try:
        async with contextlib.aclosing(items):
            async for item in items:
                if isinstance(item, Completion):
                    return item
    finally:
        watcher.cancel()
    raise RuntimeError("generation ended without a result")


async def _cancel_on_disconnect(request: Request, cancel: threading.Event) -> None:
    # The body has been read, so the next ASGI message is the disconnect (uvicorn sends
    # it when the connection closes, or once the response is complete).
    while (await request.receive())["type"] != "http.disconnect":
        pass
    cancel.set()


async def _events(request: Request, job: api.Job, model: TextModel, ids: list[int]) -> AsyncIterator[bytes]:
    """The SSE body: OpenAI chunks as the text comes, the finish, usage if asked, [DONE]."""
    if job.kind == "chat":  # OpenAI opens a chat stream with the role, before any text
        yield api.sse(api.chunk(job, model.name, role=True))
    runner: Runner = request.app.state.runner
    done: Completion | None = None
    try:
        items = runner.stream(model, ids, job.sampling, threading.Event(), job.started)
        async with contextlib.aclosing(items):
            async for item in items:
                if isinstance(item, str):
                    yield api.sse(api.chunk(job, model.name, text=item))
                else:
                    done = item
    except Exception as exc:  # the headers are sent: report it in the stream
        log.exception("generation failed mid-stream")
        yield api.sse(errors.for_path(request.url.path, 500, "generation_failed", str(exc)))
    if done is not None:
        yield api.sse(api.chunk(job, model.name, finish_reason=done.finish_reason))
        if job.include_usage:
            yield api.sse(api.usage_chunk(job, model.name, done))
    yield api.DONE


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.runner = Runner(app.state.metrics)
    app.state.slot.start(app.state.load)
    yield


def create_app(
    load: Callable[[], TextModel] = engine.load,
    max_tokens_limit: int = api.DEFAULT_MAX_TOKENS_LIMIT,
    context_tokens: int | None = None,
) -> Starlette:
    """The llm-inference ASGI app; run it with lifespan on, which starts loading the model.

    `context_tokens` may lower the model's context (prompt plus answer), e.g. to bound
    the time one request can take on a slow CPU; None keeps the model's own.
    """
    slot = ModelSlot[TextModel](SERVICE)
    metrics = GenerationMetrics(slot, ENDPOINTS)
    return model_app(slot, metrics, [Route("/health", health, methods=["GET"]),
                                     *(Route(path, _handler(kind), methods=["POST"]) for path, kind in ENDPOINTS.items()),
                                     Route("/v1/models", models, methods=["GET"])],
                     _lifespan, load, max_tokens_limit=max_tokens_limit, context_tokens=context_tokens)
