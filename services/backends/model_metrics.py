"""Prometheus metrics of the built-in model backends (llm-inference, rag-embeddings),
labelled by the model they serve, and the in-flight count their /health reports as load.

Each app has its own `CollectorRegistry` (no global one: tests build several apps in
one process) served at its `GET /metrics`; the node's api appends that page to the
node's, so every family is `meshworker_model_*`, a prefix no other component uses.
Requests are counted by an ASGI middleware around the model endpoints, which sees the
status of every answer (the error handlers' included) and the end of a streamed one.
Requests answered before the model is loaded are counted in `inflight` but in no
labelled series: they reached no model (the api and Envoy count them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.backends.http import ModelSlot

# A first token on the CPU comes in tens of milliseconds, or seconds behind a queue;
# a token after it in ~30 ms (SmolLM2-135M on 2 cores). Bounds in the manner of vLLM's.
FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
PER_TOKEN_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1)


class ModelMetrics:
    """Requests, tokens read and requests in flight of one app's model.

    `endpoints` maps each counted path to its `endpoint` label (e.g. "/v1/embeddings":
    "embedding"); other paths (/health, /metrics, /v1/models) are not counted.
    """

    def __init__(self, slot: ModelSlot[Any], endpoints: Mapping[str, str]):
        self.registry = CollectorRegistry()
        self.inflight = 0  # requests being served or waiting for the model now
        self._slot = slot
        self._endpoints = endpoints
        self.requests = Counter("meshworker_model_requests", "Requests to the model's endpoints, by "
                                "status class", ["model", "endpoint", "code"], registry=self.registry)
        self.prompt_tokens = Counter("meshworker_model_prompt_tokens", "Tokens the model read "
                                     "(prompts, texts embedded)", ["model"], registry=self.registry)
        self._in_flight = Gauge("meshworker_model_requests_in_flight", "Requests being served or "
                                "waiting for the model", ["model"], registry=self.registry)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Starlette middleware (`Middleware(metrics.middleware)`) that counts the requests
        to `endpoints` from their arrival to the last byte of their answer."""

        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            endpoint = self._endpoints.get(scope["path"]) if scope["type"] == "http" else None
            if endpoint is None:
                await app(scope, receive, send)
                return
            status = 0  # 0: no answer (a request cancelled by a shutdown is not counted)

            async def watch(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            self.inflight += 1
            try:
                await app(scope, receive, watch)
            except Exception:
                status = status or 500  # what ServerErrorMiddleware, outside, answers
                raise
            finally:
                self.inflight -= 1
                if status and (model := self._slot.name) is not None:
                    self.requests.labels(model, endpoint, f"{status // 100}xx").inc()

        return counted

    async def endpoint(self, request: Request) -> Response:
        """GET /metrics: this app's registry in the Prometheus text format."""
        if (model := self._slot.name) is not None:
            self._in_flight.labels(model).set(self.inflight)
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class GenerationMetrics(ModelMetrics):
    """ModelMetrics plus what a text generator makes: tokens out and their timing."""

    def __init__(self, slot: ModelSlot[Any], endpoints: Mapping[str, str]):
        super().__init__(slot, endpoints)
        self.completion_tokens = Counter("meshworker_model_completion_tokens", "Tokens the model "
                                         "generated", ["model"], registry=self.registry)
        self.first_token = Histogram("meshworker_model_time_to_first_token_seconds", "Time from a "
                                     "request to its first generated token, waiting for the model "
                                     "included", ["model"], buckets=FIRST_TOKEN_BUCKETS,
                                     registry=self.registry)
        self.per_token = Histogram("meshworker_model_time_per_output_token_seconds", "Mean time "
                                   "between generated tokens after the first, one sample a request",
                                   ["model"], buckets=PER_TOKEN_BUCKETS, registry=self.registry)

    def generated(self, model: str, prompt_tokens: int, completion_tokens: int,
                  started: float, first: float | None, ended: float) -> None:
        """One generation that read `prompt_tokens` and made `completion_tokens`, on the
        monotonic clock: the request `started`, its `first` token came (None: no token),
        it `ended`."""
        self.prompt_tokens.labels(model).inc(prompt_tokens)
        self.completion_tokens.labels(model).inc(completion_tokens)
        if first is None:
            return
        self.first_token.labels(model).observe(first - started)
        if completion_tokens > 1:  # vLLM's definition: the decode steps after the first token
            self.per_token.labels(model).observe((ended - first) / (completion_tokens - 1))
