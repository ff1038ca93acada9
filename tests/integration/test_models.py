"""The model services through the gateway: real embeddings, a real LLM, streaming, and a
service that points at an OpenAI-compatible server the test starts itself."""

from __future__ import annotations

import http.client
import json
import math
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import openai
import pytest
from meshtest import sample, wait_for
from openai_server import llama_server

pytestmark = pytest.mark.timeout(300)
LLM, EMBEDDER = "SmolLM2-135M-Instruct-Q4_1", "sentence-transformers/all-MiniLM-L6-v2"
PARAPHRASES = ["The cat sat on the mat.", "A cat was sitting on the rug."]
UNRELATED = "Quarterly revenue grew by eight percent."


@pytest.fixture(scope="module")
def external_embeddings():
    """A standalone embeddings server on a unix socket: the user's own OpenAI-compatible server."""
    workdir = Path(tempfile.mkdtemp(prefix="mw-ext-", dir="/tmp"))
    socket_path = workdir / "embed.sock"
    code = f"from services.backends.embeddings import main; main.serve({str(socket_path)!r}, 'warning')"
    proc = subprocess.Popen([sys.executable, "-c", code])
    yield f"unix:{socket_path}"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def llamacpp():
    """llama-cpp-python's own OpenAI server: another's backend, listing its model at /v1/models."""
    with llama_server(socket_path=str(Path(tempfile.mkdtemp(prefix="mw-llama-", dir="/tmp")) / "l.sock")) as server:
        yield server


@pytest.fixture(scope="module")
def node(start_module_node, external_embeddings, llamacpp):
    return start_module_node(f"""
services = ["llm-inference", "rag-embeddings", "ext-embed", "llamacpp"]
[models]
"gpt-4o-mini" = "{LLM}"
[service.llamacpp]
url = "{llamacpp.upstream}"
health_path = "/v1/models"
[service.ext-embed]
url = "{external_embeddings}"
""")


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.mark.parametrize("service", ["rag-embeddings", "ext-embed"])
def test_embeddings_of_paraphrases_are_closer_than_unrelated(node, service):
    reply = node.post_json(f"/service/{service}", {"texts": [*PARAPHRASES, UNRELATED]})
    assert reply.status == 200, reply.body
    vectors = reply.json()["data"]["embeddings"]
    assert reply.json()["data"]["dim"] == len(vectors[0]) == 384
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2


def test_openai_embeddings_api_through_the_gateway(node):
    reply = node.post_json("/service/rag-embeddings/v1/embeddings", {"input": PARAPHRASES})
    body = reply.json()
    assert reply.status == 200 and body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert cosine(body["data"][0]["embedding"], body["data"][1]["embedding"]) > 0.5


def test_empty_text_list_is_400(node):
    reply = node.post_json("/service/rag-embeddings", {"texts": []})
    assert reply.status == 400 and "error" in reply.json()


def test_llm_answers_the_seeds_request_shape(node):
    reply = node.post_json("/service/llm-inference", {"prompt": "Say hello.", "max_tokens": 8})
    assert reply.status == 200, reply.body
    data = reply.json()["data"]
    assert data["text"].strip() and 0 < data["usage"]["completion_tokens"] <= 8


def test_max_tokens_out_of_range_is_400(node):
    reply = node.post_json("/service/llm-inference", {"prompt": "Hi", "max_tokens": 100000})
    assert reply.status == 400


def read_stream(node, path: str, payload: dict) -> tuple[list[bytes], list[str]]:
    """POST and read the answer as it arrives: the raw reads, and the SSE data lines."""
    conn = http.client.HTTPConnection("127.0.0.1", int(node.base_url.rsplit(":", 1)[1]), timeout=120)
    conn.request("POST", path, json.dumps(payload), {"Content-Type": "application/json"})
    reply = conn.getresponse()
    assert reply.status == 200
    reads = []
    while chunk := reply.read1(65536):
        reads.append(chunk)
    conn.close()
    events = [line[6:] for line in b"".join(reads).decode().splitlines() if line.startswith("data: ")]
    return reads, events


def test_streamed_chat_completion_arrives_in_chunks_ending_with_done(node):
    reads, events = read_stream(node, "/service/llm-inference/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Count to five."}], "max_tokens": 12, "stream": True})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) >= 2 and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len(reads) >= 2  # token by token, not all at the end
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]).strip()


def test_stats_and_metrics_name_each_model_its_load_time_and_memory(node):
    backends = {b["name"]: b for b in node.get("/stats").json()["backends"]}
    assert "SmolLM2" in backends["llm-inference"]["model"]
    assert "MiniLM" in backends["rag-embeddings"]["model"]
    assert backends["llm-inference"]["load_seconds"] > 0 and backends["llm-inference"]["rss_bytes"] > 100e6
    metrics = node.get("/metrics").body.decode()
    assert 'meshworker_router_backend_resident_memory_bytes{service="llm-inference"}' in metrics
    assert 'meshworker_router_backend_load_seconds{service="rag-embeddings"}' in metrics


def backend_health(node, service: str) -> dict:
    """The backend's own /health, straight over its unix socket."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(node.runtime_dir / f"svc-{service}.sock"))
        sock.sendall(b"GET /health HTTP/1.0\r\nHost: backend\r\n\r\n")
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


def test_a_client_leaving_mid_stream_stops_the_generation(node):
    before = backend_health(node, "llm-inference")["cancelled"]
    conn = http.client.HTTPConnection("127.0.0.1", int(node.base_url.rsplit(":", 1)[1]), timeout=60)
    conn.request("POST", "/service/llm-inference/v1/completions", json.dumps(
        {"prompt": "Once upon a time", "max_tokens": 400, "stream": True}), {"Content-Type": "application/json"})
    reply = conn.getresponse()
    assert reply.status == 200 and reply.read1(65536)
    conn.close()  # gone after the first tokens, long before 400
    wait_for(lambda: backend_health(node, "llm-inference")["cancelled"] == before + 1, 30,
             "the backend to stop generating")
    assert node.post_json("/service/llm-inference", {"prompt": "Hi", "max_tokens": 4}).status == 200


# --- the mesh's OpenAI API on /v1, with the official SDK as the client

@pytest.fixture(scope="module")
def client(node):
    return openai.OpenAI(base_url=node.base_url + "/v1", api_key="unused", max_retries=0)


def test_v1_models_lists_each_model_with_the_node_that_serves_it(client):
    models = {m.id: m for m in client.models.list()}
    assert {LLM, EMBEDDER, "gpt-4o-mini"} <= models.keys()
    assert models[LLM].kind == "chat" and models[LLM].context_length > 0
    assert models[EMBEDDER].kind == "embedding"
    assert [n["worker_id"] for n in models[LLM].nodes] == ["node1"] and models[LLM].nodes[0]["local"]
    assert models["gpt-4o-mini"].alias_of == LLM


def test_chat_by_model_name_says_which_node_served_it(client):
    raw = client.chat.completions.with_raw_response.create(
        model=LLM, messages=[{"role": "user", "content": "Say hello."}], max_tokens=6)
    answer = raw.parse()
    assert answer.model == LLM and answer.choices[0].message.content and answer.usage.completion_tokens > 0
    assert (raw.headers["x-mesh-worker"], raw.headers["x-mesh-route"]) == ("node1", "local")


def test_a_streamed_chat_arrives_token_by_token(client):
    chunks = list(client.chat.completions.create(
        model=LLM, messages=[{"role": "user", "content": "Count to five."}], max_tokens=10, stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 3 and all(c.model == LLM for c in chunks)


def test_completions_and_embeddings_by_model_name(client):
    completion = client.completions.create(model=LLM, prompt="One, two,", max_tokens=4)
    assert completion.choices[0].text and completion.model == LLM
    vectors = client.embeddings.create(model=EMBEDDER, input=[*PARAPHRASES, UNRELATED]).data
    a, b, c = (v.embedding for v in vectors)
    assert len(a) == 384 and cosine(a, b) > cosine(a, c) + 0.2


def test_an_alias_reaches_its_model_and_the_backend_sees_the_real_id(client):
    answer = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert answer.model == LLM  # the body was rewritten: the backend would refuse "gpt-4o-mini"


def test_an_unknown_model_is_404_model_not_found_in_openais_shape(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "Hi"}])
    error = caught.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model" and "no-such-model" in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("body", [b'{"messages": []}', b"not json", b'{"model": 7}', b""])
def test_a_body_naming_no_model_is_400_in_openais_shape(node, body):
    reply = node.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    assert reply.status in (400, 404), reply.body
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == "model"


def test_a_bad_request_to_a_known_model_is_400_from_its_backend(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=LLM, messages=[], max_tokens=3)
    assert caught.value.body["param"] == "messages"


def test_a_client_cannot_pick_a_model_route_with_a_header(node):
    reply = node.request("POST", "/v1/chat/completions", b"not json",
                         {"Content-Type": "application/json", "X-Mesh-Model": LLM})
    assert reply.status == 400 and reply.json()["error"]["code"] == "missing_model"


def test_a_body_over_the_limit_is_413_in_openais_shape(node):
    # With Expect: 100-continue a client waits for the verdict before sending the body.
    conn = http.client.HTTPConnection("127.0.0.1", int(node.base_url.rsplit(":", 1)[1]), timeout=30)
    conn.putrequest("POST", "/v1/embeddings")
    conn.putheader("Content-Length", str(32 * 1024 * 1024 + 1))
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    reply = conn.getresponse()
    error = json.loads(reply.read())["error"]
    conn.close()
    assert reply.status == 413 and error["code"] == "body_too_large"
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"


def test_another_openai_server_registered_as_a_backend_serves_its_model_through_v1(client, llamacpp):
    listed = {m.id: m for m in client.models.list()}
    assert listed[llamacpp.model_id].nodes[0]["service"] == "llamacpp"  # from its own /v1/models
    raw = client.chat.completions.with_raw_response.create(
        model=llamacpp.model_id, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4)
    assert raw.parse().model == llamacpp.model_id and raw.headers["x-mesh-route"] == "local"


def test_metrics_per_model_count_requests_and_tokens_on_the_node_page(node, client):
    before = node.get("/metrics").body.decode()
    client.chat.completions.create(model=LLM, messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    after = node.get("/metrics").body.decode()
    labels = {"model": LLM, "service": "llm-inference"}
    assert sample(after, "meshworker_model_requests_total", **labels) \
        == sample(before, "meshworker_model_requests_total", **labels) + 1
    assert sample(after, "meshworker_model_completion_tokens_total", **labels) \
        > sample(before, "meshworker_model_completion_tokens_total", **labels)
    assert sample(after, "meshworker_model_time_to_first_token_seconds_count", **labels) \
        == sample(before, "meshworker_model_time_to_first_token_seconds_count", **labels) + 1


def test_a_model_named_last_in_a_large_body_is_routed_too(node):
    # Envoy reads the whole JSON body: where `model` sits in it does not matter.
    body = json.dumps({"input": ["filler text " * 100] * 200, "model": EMBEDDER}).encode()
    reply = node.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
    assert reply.status == 200, reply.body[:300]
    assert reply.json()["model"] == EMBEDDER and len(reply.json()["data"]) == 200


def test_a_model_whose_every_provider_is_down_is_503_with_retry_after(node):
    node.supervisorctl("stop", "svc-llm-inference")
    try:
        wait_for(lambda: node.get("/health").json()["backends"]["llm-inference"] == "unhealthy", 30,
                 "the router to see the LLM down")
        body = json.dumps({"model": LLM, "messages": [{"role": "user", "content": "Hi"}]}).encode()
        reply = node.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        assert reply.status == 503 and reply.headers["Retry-After"], reply.body
        error = reply.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["code"] == "backend_unavailable"
    finally:
        node.supervisorctl("start", "svc-llm-inference")
        node.wait_healthy(timeout=120)
