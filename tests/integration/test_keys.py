"""Client API keys on a real node, checked by its Envoy: the official openai SDK and curl
as clients, keys made and revoked with the `meshworker keys` CLI.

The node sets client_auth_loopback = false, so this test's loopback clients need a key
as a network client does (the mesh test checks a network client beside an exempt
loopback one). Its backends: the ControlledBackend (it shows the Authorization header it
got) and the chat double of the mesh tests (one model, double-1).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
from meshtest import BIN, sample, wait_for, with_minute_left

from services.common import keys

pytestmark = pytest.mark.timeout(240)
DOUBLE = Path(__file__).resolve().parents[2] / "bench" / "openai_double.py"
MODEL, DOUBLE_PORT = "double-1", 9112


@pytest.fixture(scope="module")
def node(start_module_node, test_backend):
    return start_module_node(
        f'services = ["plain", "chat"]\nclient_auth_loopback = false\n'
        f'[service.plain]\nurl = "{test_backend}"\n'
        f'[service.chat]\nurl = "http://127.0.0.1:{DOUBLE_PORT}"\n'
        f'command = "{sys.executable} {DOUBLE} {DOUBLE_PORT} {MODEL} node1 0"\n')


def cli(node, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "meshworker"), "keys", *args], check=False, env=node.env,
                          capture_output=True, text=True, timeout=30)


def create(node, name: str, *options: str) -> str:
    done = cli(node, "create", "--name", name, *options)
    assert done.returncode == 0, done.stderr
    return next(line for line in done.stdout.splitlines() if line.startswith(keys.PREFIX))  # the token's line


def sdk(node, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=node.base_url + "/v1", api_key=key, max_retries=0)


def chat(node, key: str):
    with sdk(node, key) as client:
        return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])


def curl(node, path: str, *headers: str) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of a GET with these headers."""
    argv = ["curl", "-s", "-D", "-", node.base_url + path]
    for header in headers:
        argv += ["-H", header]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    head, _, body = out.partition("\n\n")  # text mode reads CRLF as \n
    lines = head.split("\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, json.loads(body)


def test_no_key_is_401_in_each_shape_while_health_stays_open(node):
    status, _, body = curl(node, "/service/plain/x")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert "X-API-Key" in body["error"]["message"] and "missing" in body["error"]["message"]
    status, _, body = curl(node, "/v1/models")  # OpenAI's shape on /v1 (the SDK always sends a key)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] is None
    assert node.get("/health").status == 200 and node.get("/metrics").status == 200


def tampered(token: str) -> str:
    """The token with its signature's first character changed: all six of its bits are signature bits,
    so the result never verifies (changing the last characters could leave only base64 padding bits changed)."""
    head, signature = token.rsplit(".", 1)
    return f"{head}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"


def test_a_wrong_key_is_401(node):
    with pytest.raises(openai.AuthenticationError):
        chat(node, "sk-not-a-mesh-key")
    token = create(node, "tampered")
    assert curl(node, "/service/plain/x", f"X-API-Key: {tampered(token)}")[0] == 401  # a signature that fails
    assert curl(node, "/service/plain/x", f"X-API-Key: {token.removeprefix(keys.PREFIX)}")[0] == 401  # no prefix


def test_a_key_works_from_the_sdk_and_as_x_api_key_and_never_reaches_the_backend(node):
    token = create(node, "ci")
    answer = chat(node, token)
    assert answer.choices[0].message.content and answer.model == MODEL
    status, _, body = curl(node, "/service/plain/x", f"X-API-Key: {token}")
    assert status == 200 and body["authorization"] is None  # the key stops at Envoy
    listed = cli(node, "list").stdout
    assert "ci" in listed and token not in listed and token[-20:] not in listed


def test_a_revoked_key_is_refused_when_the_cli_returns(node):
    token = create(node, "leaving")
    assert curl(node, "/service/plain/x", f"Authorization: Bearer {token}")[0] == 200
    done = cli(node, "revoke", "leaving")
    assert done.returncode == 0, done.stderr
    assert curl(node, "/service/plain/x", f"Authorization: Bearer {token}")[0] == 401
    assert "leaving" not in cli(node, "list").stdout
    assert cli(node, "revoke", "leaving").returncode == 2  # nothing of that name in force: said, not ignored


def test_an_expired_key_is_refused(node):
    token = create(node, "brief", "--expires", "2s")
    assert curl(node, "/service/plain/x", f"X-API-Key: {token}")[0] == 200
    # Envoy allows 5 s of clock skew past the key's expiry.
    wait_for(lambda: curl(node, "/service/plain/x", f"X-API-Key: {token}")[0] == 401, 15, "the key to expire")
    _, _, body = curl(node, "/service/plain/x", f"X-API-Key: {token}")
    assert "expired" in body["error"]["message"]


def test_a_key_kept_to_other_models_is_403_for_this_one_and_for_services(node):
    other, own = create(node, "others-only", "--models", "some-other-model"), create(node, "double-only", "--models", MODEL)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        chat(node, other)
    assert refused.value.code == "model_not_allowed"
    assert chat(node, own).model == MODEL
    status, _, body = curl(node, "/service/plain/x", f"X-API-Key: {own}")
    assert status == 403 and body["error"]["code"] == "model_not_allowed"  # a service could serve any model


def test_over_its_requests_per_minute_a_key_gets_429_with_retry_after(node):
    token = create(node, "two-a-minute", "--rpm", "2")
    statuses = [curl(node, "/service/plain/x", f"X-API-Key: {token}") for _ in range(3)]
    assert [s[0] for s in statuses] == [200, 200, 429]
    _, headers, body = statuses[2]
    assert headers["retry-after"] == "30" and body["error"]["code"] == "rate_limit_exceeded"
    with sdk(node, token) as client, pytest.raises(openai.RateLimitError):
        client.models.list()
    assert curl(node, "/service/plain/x", f"X-API-Key: {create(node, 'unlimited')}")[0] == 200  # its own bucket


def test_a_keys_requests_errors_and_tokens_are_counted_on_metrics_and_in_the_list(node):
    token = create(node, "counted")
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "three words here"}]}
    with sdk(node, token) as client:
        client.chat.completions.create(**ask, max_tokens=7)
        list(client.chat.completions.create(**ask, max_tokens=5, stream=True, stream_options={"include_usage": True}))
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(**(ask | {"model": "no-such-model"}))

    def counted(family: str, **labels: str) -> float:
        return sample(node.get("/metrics").body.decode(), family, key="counted", **labels)
    # Envoy's access log reaches the router within its 0.1 s flush, after each answer.
    wait_for(lambda: counted("meshworker_key_requests_total") == 3, 10, "the three requests to be counted")
    assert counted("meshworker_key_errors_total") == 1
    assert counted("meshworker_key_tokens_total", kind="prompt") == 3 + 3  # the JSON answer's and the stream's
    assert counted("meshworker_key_tokens_total", kind="completion") == 7 + 5
    row = next(line.split() for line in cli(node, "list").stdout.splitlines() if line.startswith("counted "))
    assert row[-5:-2] == ["3", "1", "18"]  # requests, errors, tokens (then the day and time last used)


def test_past_its_tokens_per_minute_a_key_gets_429_until_the_minute_ends(node):
    token = create(node, "ten-tokens", "--tpm", "10")
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "three words here"}]}
    with_minute_left(15)
    with sdk(node, token) as client:
        client.chat.completions.create(**ask, max_tokens=7)  # 3 + 7 tokens: the whole minute's

        def refused():
            try:
                client.chat.completions.create(**ask, max_tokens=1)
            except openai.RateLimitError as err:
                return err
            return None
        # Counted from the access log after the answer: refused within a flush and a push.
        err = wait_for(refused, 5, "the key to be refused past its tokens")
    wait = int(err.response.headers["retry-after"])
    assert 0 < wait <= 60 and "per minute" in err.message and err.code == "rate_limit_exceeded"
    status, _, body = curl(node, "/service/plain/x", f"X-API-Key: {token}")
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"  # every route, in our shape there


def test_the_cli_refuses_a_name_in_use_and_a_bad_name(node):
    create(node, "taken")
    for name in ("taken", "Bad Name"):
        done = cli(node, "create", "--name", name)
        assert done.returncode == 2 and name in done.stderr


def test_keys_survive_a_router_restart(node):
    token = create(node, "durable")
    node.supervisorctl("restart", "router")
    wait_for(lambda: node.health() and node.health()["status"] == "healthy", 30, "the router to come back")
    time.sleep(1)
    assert curl(node, "/service/plain/x", f"X-API-Key: {token}")[0] == 200
    assert "durable" in cli(node, "list").stdout


def test_open_mode_needs_no_key_and_says_so(start_node):
    node = start_node('services = ["vision-ocr"]\nclient_auth = "open"\nclient_auth_loopback = false\n')
    health = node.get("/health").json()
    assert health["client_auth"] == "open" and "anyone" in health["access"]
    assert node.post_json("/service/vision-ocr", {"image_base64": ""}).status != 401
    assert "client_auth = \"open\"" in node.log_path.read_text()
