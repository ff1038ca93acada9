"""The gateway's HTTP API on a real node: the seed's fields, real OCR, every bad input."""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import time
import urllib.request
import uuid

import pytest
from meshtest import BIN, SENTENCE, render_png, wait_for

pytestmark = pytest.mark.timeout(180)
API_KEY = "sk-test-0123456789abcdef"

SEED_CAPABILITIES = {"hostname", "cpu_cores", "has_gpu", "gpu_type", "gpu_memory", "worker_type",
                     "low_latency", "latency_ms", "has_edge", "ram"}
SEED_ROUTING = {"local_requests", "forwarded_requests", "cache_hits", "cache_misses", "dht_lookups",
                "failed_requests", "cache_size", "cache_hit_rate"}


@pytest.fixture(scope="module")
def node(start_module_node, test_backend):
    return start_module_node(f"""
services = ["vision-ocr", "echo", "keyed"]
max_body_bytes = 1048576
[service.echo]
url = "{test_backend}"
health_path = "/health"
timeout_s = 1
[service.keyed]
url = "{test_backend}"
api_key = "{API_KEY}"
""")


def test_health_has_every_field(node):
    reply = node.get("/health")
    body = reply.json()
    assert reply.status == 200
    assert body["status"] == "healthy"
    assert body["worker_id"] == "node1"
    assert body["vpn_ip"] is None and "no overlay" in body["vpn_reason"]
    assert body["services"] == ["echo", "keyed", "vision-ocr"]
    assert body["dht_enabled"] is True
    assert 0 < body["uptime"] < 120  # seconds since start, not a Unix timestamp (the seed's bug)
    assert abs(body["started_at"] + body["uptime"] - time.time()) < 5
    assert body["version"] == "0.1.0"
    assert body["components"] == {c: "SERVING" for c in ("nebula-agent", "dht", "router", "api", "gateway")}
    assert reply.headers["X-Mesh-Worker"] == "node1"


def test_stats_has_seed_fields_and_exact_numbers(start_node):
    # A node of its own: the module's node has counted the other tests' requests, in any order.
    body = start_node("services = []\n").get("/stats").json()
    assert body["worker_id"] == "node1" and body["vpn_ip"] is None
    assert SEED_CAPABILITIES <= set(body["capabilities"])
    assert body["capabilities"]["ram_bytes"] > 0 and body["capabilities"]["gpus"] == []
    assert body["capabilities"]["has_gpu"] is False and body["capabilities"]["worker_type"] in ("cpu", "edge")
    assert set(body["routing"]) == SEED_ROUTING
    assert all(v == 0 for v in body["routing"].values())


def test_ocr_reads_rendered_text_and_counts_one_local_request(node):
    before = node.get("/stats").json()["routing"]
    image = base64.b64encode(render_png(SENTENCE)).decode()
    reply = node.post_json("/service/vision-ocr", {"image_base64": image})
    body = reply.json()
    assert reply.status == 200, body
    assert body["status"] == "success" and body["service"] == "vision-ocr"
    assert body["message"] == "Processed by node1" and body["worker_id"] == "node1"
    assert body["data"]["text"] == SENTENCE
    assert {w["text"] for w in body["data"]["words"]} == set(SENTENCE.split())
    assert reply.headers["X-Mesh-Route"] == "local"
    routing = node.get("/stats").json()["routing"]
    assert routing["local_requests"] == before["local_requests"] + 1
    assert routing["failed_requests"] == before["failed_requests"]


@pytest.mark.parametrize("content_type, status", [
    ("application/json; charset=utf-8", 200), ("application/problem+json", 200), ("text/plain", 502)])
def test_the_envelope_wraps_answers_that_declare_json(node, content_type, status):
    reply = node.post_json("/service/echo", {"content_type": content_type})
    assert reply.status == status
    if status == 200:
        assert reply.json()["data"]["echo"] == {"content_type": content_type}
    else:
        assert reply.json()["error"]["code"] == "bad_gateway" and "did not answer JSON" in reply.json()["error"]["message"]


def test_ocr_multipart_upload_through_the_path_route(node):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"l.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + render_png(SENTENCE) + f"\r\n--{boundary}--\r\n".encode()
    reply = node.request("POST", "/service/vision-ocr/ocr", body,
                         {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert reply.status == 200, reply.body
    assert reply.json()["text"] == SENTENCE


def test_non_image_upload_is_a_clear_400(node):
    reply = node.post_json("/service/vision-ocr", {"image_base64": base64.b64encode(b"not an image").decode()})
    assert reply.status == 400
    assert reply.json()["error"]["code"] == "bad_image"


def test_passthrough_keeps_method_path_and_query(node):
    reply = node.get("/service/echo/some/path?x=1&y=%20z")
    assert reply.status == 200, reply.body
    assert reply.json() == {"path": "/some/path?x=1&y=%20z", "authorization": None}


def test_an_api_key_reaches_the_backend_and_never_the_logs(node):
    assert node.get("/service/keyed/v1/models").json()["authorization"] == f"Bearer {API_KEY}"
    assert API_KEY not in node.log_path.read_text()


def test_unknown_service_is_404_in_the_error_shape(node):
    reply = node.post_json("/service/no-such-thing", {})
    assert reply.status == 404
    assert reply.json()["error"] == {"code": "no_such_service",
                                     "message": "no node of the mesh hosts service 'no-such-thing'"}


def test_invalid_json_is_400(node):
    reply = node.request("POST", "/service/echo", b"{not json", {"Content-Type": "application/json"})
    assert reply.status == 400
    assert reply.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("path", ["/service/..", "/service/a%2Fb", "/service/echo%2F..%2Fx",
                                  "/service/%2e%2e", "/service/" + "a" * 300, "/service/ec%01ho",
                                  "/service/echo/../../etc/passwd", "/service/echo/%2e%2e/x",
                                  "/service/echo/a%00b", "/service/ECHO"])
def test_hostile_service_paths_never_reach_a_backend(node, path):
    reply = node.request("POST", path, b"{}", {"Content-Type": "application/json"})
    # 405: a path that normalizes to "/" (the status page takes only GET)
    assert reply.status in (400, 404, 405), (path, reply.status)
    assert "error" in reply.json() and "echo" not in reply.body.decode().replace("/service/echo", "")


def test_body_over_the_limit_is_413_before_it_is_sent(node):
    # With Expect: 100-continue a client waits for our verdict before sending the body.
    conn = http.client.HTTPConnection("127.0.0.1", int(node.base_url.rsplit(":", 1)[1]), timeout=30)
    conn.putrequest("POST", "/service/echo/upload")
    conn.putheader("Content-Length", str(1048576 + 1))
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    reply = conn.getresponse()
    assert reply.status == 413
    assert json.loads(reply.read())["error"]["code"] == "body_too_large"
    conn.close()


def test_chunked_body_over_the_limit_is_413(node):
    def chunks():
        for _ in range(24):  # 1.5 MiB, over the 1 MiB limit
            yield b"y" * 65536
    req = urllib.request.Request(node.base_url + "/service/echo/upload", data=chunks(), method="POST",
                                 headers={"Transfer-Encoding": "chunked"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    with err.value:
        assert err.value.code == 413, err.value.read()


def test_body_under_the_limit_streams_through(node):
    reply = node.request("POST", "/service/echo/upload", b"z" * 900_000)
    assert reply.status == 200 and reply.json()["size"] == 900_000


def test_slow_backend_is_504_after_its_timeout(node):
    reply = node.get("/service/echo/slow")  # the backend answers after 3 s: too late for 1 s
    assert reply.status == 504
    assert reply.json()["error"] == {"code": "backend_timeout",
                                     "message": "echo did not answer within its timeout"}


def test_backend_down_is_503_with_retry_after(start_node, test_backend):
    node = start_node('services = ["echo"]\n[service.echo]\nurl = "http://127.0.0.1:9"\n', wait=False)
    wait_for(lambda: ((node.health() or {}).get("gateway") or {}).get("acked_version"), 60,
             "Envoy's configuration")
    reply = node.post_json("/service/echo", {"a": 1})
    assert reply.status == 503
    assert reply.headers["Retry-After"] == "1"
    assert reply.json()["error"]["code"] in ("backend_unhealthy", "backend_unavailable")
    health = node.get("/health").json()
    assert health["status"] == "degraded" and health["services"] == []


def test_status_prints_components_services_and_counters(node):
    out = subprocess.run([str(BIN / "meshworker"), "status"], env=node.env, capture_output=True, text=True,
                         timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("node node1: healthy")
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()[1:] if line.strip()}
    assert rows["router"] == ["SERVING"] and rows["vision-ocr"] == ["healthy"]
    assert rows["local_requests"][0].isdigit()


def test_status_of_a_node_that_is_not_running_says_so(tmp_path):
    env = {"PATH": os.environ["PATH"], "MESHWORKER_STATE_DIR": str(tmp_path)}
    out = subprocess.run([str(BIN / "meshworker"), "status"], env=env, capture_output=True, text=True,
                         timeout=30, check=False)
    assert out.returncode == 1 and "is not running" in out.stderr
