"""The status page at GET / in a real headless Chromium (Debian's `chromium`), driven over
the Chrome DevTools Protocol, against a two-node mesh on loopback.

node1 hosts `alpha`, node2 hosts `beta`; the page is opened on node1. Screenshots go to
$MESHWORKER_TEST_ARTIFACTS (default: <tmp>/meshworker-test-artifacts).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from echo_backend import Echo
from meshtest import wait_for
from websockets.sync.client import connect

from services.common.rpc import dht_pb2, dht_pb2_grpc

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's `chromium` (.ci/run installs it)")]
SECRET = "status-page-test-secret-0123456789"
MODEL_JS = Path(__file__).resolve().parents[2] / "services" / "api" / "static" / "model.js"
ARTIFACTS = Path(os.environ.get("MESHWORKER_TEST_ARTIFACTS") or Path(tempfile.gettempdir()) / "meshworker-test-artifacts")
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}


class Browser:
    """One headless Chromium page, driven over the DevTools protocol's websocket."""

    def __init__(self, profile: Path):
        # No sandbox: it needs root's setuid helper or user namespaces, which containers often
        # lack, and this browser only opens our own page in a throwaway profile.
        argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--no-default-browser-check", f"--user-data-dir={profile}", "--remote-debugging-port=0",
                "--window-size=1280,1000", "about:blank"]
        with open(profile.parent / "chromium.log", "wb") as log:  # Chromium holds its own copy
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.stack = contextlib.ExitStack()
        self.stack.callback(self.stop)
        self.ids = itertools.count(1)
        self.exceptions: list[str] = []
        with self.stack.pop_all() as on_failure:
            active = profile / "DevToolsActivePort"  # Chromium writes the port it bound here
            port = wait_for(lambda: active.exists() and active.read_text().split("\n")[0], 20,
                            "Chromium's DevTools port")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as reply:
                page = next(t for t in json.load(reply) if t["type"] == "page")
            self.ws = on_failure.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10))
            self.call("Runtime.enable")
            self.call("Page.enable")
            self.stack = on_failure.pop_all()

    def call(self, method: str, **params) -> dict:
        sent = next(self.ids)
        self.ws.send(json.dumps({"id": sent, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("method") == "Runtime.exceptionThrown":
                details = message["params"]["exceptionDetails"]
                self.exceptions.append(details.get("exception", {}).get("description") or details["text"])
            if message.get("id") == sent:
                assert "error" not in message, f"{method}: {message['error']}"
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, f"{expression}: {result['exceptionDetails']}"
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        wait_for(lambda: self.evaluate("location.href") == url and self.evaluate("document.readyState") == "complete",
                 10, f"{url} to load")

    def text(self, selector: str) -> str:
        return self.evaluate(f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent || ''")

    def wait_text(self, selector: str, predicate, what: str, timeout: float = 15) -> str:
        def matching() -> str | None:
            text = self.text(selector)
            return text if predicate(text) else None
        return wait_for(matching, timeout, what)

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        print(f"status page screenshot: {path}")
        return path

    def stop(self) -> None:
        """Chromium and every process it started (its own process group)."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self) -> None:
        self.stack.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    workdir = Path(tempfile.mkdtemp(prefix="mw-chromium-"))
    (workdir / "profile").mkdir()
    chromium = Browser(workdir / "profile")
    yield chromium
    chromium.close()
    shutil.rmtree(workdir, ignore_errors=True)


def echo_server(name: str) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), type(name.title(), (Echo,), {"name": name}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dht_port(node) -> int:
    with grpc.insecure_channel(f"unix:{node.runtime_dir / 'dht.sock'}") as channel:
        return dht_pb2_grpc.DhtStub(channel).Stats(dht_pb2.DhtStatsRequest(), timeout=2).port


def providers(node) -> dict[str, list[str]]:
    reply = node.get("/mesh/services")
    if reply.status != 200:
        return {}
    return {s["name"]: sorted(p["worker_id"] for p in s["providers"]) for s in reply.json()["services"]}


@pytest.fixture(scope="module")
def mesh(start_module_node):
    """node1 (alpha) and node2 (beta), each advertising its own peer listener on loopback."""
    servers = {name: echo_server(name) for name in ("alpha", "beta")}
    common = {"MESHWORKER_MESH_SECRET": SECRET, "MESHWORKER_ANNOUNCE_TTL_S": "6",
              "MESHWORKER_HEALTH_INTERVAL_S": "0.5"}

    def start(name: str, seeds: str):
        peer = free_port()
        toml = f'services = ["{name}"]\n[service.{name}]\nurl = "http://127.0.0.1:{servers[name].server_address[1]}"\n'
        return start_module_node(toml, MESHWORKER_PEER_PORT=str(peer), MESHWORKER_DHT_SEEDS=seeds,
                                 MESHWORKER_ADVERTISE_URL=f"https://127.0.0.1:{peer}", **common)

    node1 = start("alpha", "")
    node2 = start("beta", f"127.0.0.1:{wait_for(lambda: dht_port(node1), 10, 'node1 DHT port')}")
    wait_for(lambda: providers(node1) == {"alpha": ["node1"], "beta": ["node2"]}, 30, "node1 to see both nodes")
    yield node1, node2
    for server in servers.values():
        server.shutdown()
        server.server_close()


def node_row(browser: Browser, worker: str) -> str:
    return browser.text(f'#nodes tr[data-node="{worker}"]')


def counter(browser: Browser, name: str) -> int:
    text = browser.text(f"#counter-{name}")
    return int(text) if text.isdigit() else -1


def test_the_page_shows_both_nodes_their_services_and_live_counters(mesh, browser):
    node1, node2 = mesh
    browser.open(node1.base_url + "/")
    browser.wait_text('#nodes tr[data-node="node2"]', lambda t: "beta" in t, "node2 and its service on the page")
    assert "alpha" in node_row(browser, "node1") and "this node" in node_row(browser, "node1")
    assert "127.0.0.1:" in node_row(browser, "node2")  # its advertised address
    services = browser.text("#services")
    assert "alpha" in services and "beta" in services
    assert browser.text("#node-state") == "healthy" and browser.text("#worker") == "node1"
    wait_for(lambda: counter(browser, "local_requests") >= 0, 10, "the routing counters")

    local, forwarded = counter(browser, "local_requests"), counter(browser, "forwarded_requests")
    for i in range(4):
        assert node1.post_json("/service/alpha", {"n": i}).status == 200
        assert node1.post_json("/service/beta", {"n": i}).status == 200
    wait_for(lambda: counter(browser, "local_requests") >= local + 4
             and counter(browser, "forwarded_requests") >= forwarded + 4, 10, "the counters to move on the page")
    browser.wait_text("#tile-rate", lambda t: t not in ("—", "0.0"), "a request rate above zero")
    # beta was forwarded: Envoy connected to node2, so node2 shows as up
    browser.wait_text('#nodes tr[data-node="node2"]', lambda t: "up" in t, "node2 to show as reachable")
    browser.screenshot(ARTIFACTS / "status-page.png")
    try:
        browser.call("Emulation.setDeviceMetricsOverride", **PHONE)
        assert browser.evaluate("getComputedStyle(document.querySelector('#nodes thead')).display") == "none"
        browser.screenshot(ARTIFACTS / "status-page-phone.png")
    finally:
        browser.call("Emulation.clearDeviceMetricsOverride")

    node2.stop()  # the node vanishes: its records expire (TTL 6 s) and the page says so
    browser.wait_text('#nodes tr[data-node="node2"]', lambda t: "gone" in t, "node2 shown as gone", timeout=30)
    before = browser.text("#freshness")
    browser.wait_text("#freshness", lambda t: t != before and t.startswith("updated"), "the page to keep polling")
    assert "node node2 left the mesh" in browser.text("#events")
    browser.screenshot(ARTIFACTS / "status-page-node-gone.png")
    assert browser.exceptions == []


def test_unknown_node_or_service_gets_a_clear_message(mesh, browser):
    node1, _ = mesh
    browser.open(node1.base_url + "/?node=nope")
    notice = browser.wait_text("#notice", lambda t: "nope" in t, "the notice for an unknown node")
    assert "No node named “nope” in this mesh" in notice and "node1" in notice
    browser.evaluate("location.hash = 'service=nope'")  # the fragment wins over the query
    notice = browser.wait_text("#notice", lambda t: "service" in t, "the notice for an unknown service")
    assert "No service named “nope” in this mesh" in notice and "alpha" in notice
    browser.open(node1.base_url + "/?node=%3Cimg%20src%3Dx%3Enope")  # written as text, not as markup
    notice = browser.wait_text("#notice", lambda t: "nope" in t, "the notice for a name with markup")
    assert "No node named “<img src=x>nope”" in notice
    assert browser.evaluate("document.querySelectorAll('#notice img').length") == 0
    browser.evaluate("location.hash = 'node=node1'")
    browser.wait_text("#view-title", lambda t: t == "Node node1", "node1's own view")
    assert browser.evaluate("document.querySelectorAll('#nodes tbody tr').length") == 1
    assert "Traceback" not in browser.evaluate("document.body.innerText")
    assert browser.exceptions == []


def test_the_page_says_unreachable_while_the_api_is_down_and_recovers(mesh, browser):
    node1, _ = mesh
    browser.open(node1.base_url + "/")
    browser.wait_text("#node-state", lambda t: t != "loading", "the first update")
    node1.supervisorctl("stop", "api")
    try:
        banner = browser.wait_text("#banner", lambda t: "unreachable" in t, "the unreachable banner")
        assert "Still trying" in banner
        assert browser.text("#worker") == "node1"  # what it last said stays on the page
        assert browser.text("#node-state") == "unreachable"
        browser.screenshot(ARTIFACTS / "status-page-unreachable.png")
    finally:
        node1.supervisorctl("start", "api")
    browser.wait_text("#freshness", lambda t: t.startswith("updated"), "the page to recover", timeout=20)
    wait_for(lambda: browser.evaluate("document.getElementById('banner').hidden"), 10, "the banner to go")
    assert browser.exceptions == []


def test_the_page_model_helpers(browser):
    """model.js's pure functions, with made-up answers of the endpoints."""
    browser.open("about:blank")
    browser.evaluate(MODEL_JS.read_text())
    got = browser.evaluate("""(() => {
      const M = MeshStatus;
      const routing = (l, f, x) => ({local_requests: l, forwarded_requests: f, failed_requests: x});
      const snap = {
        health: {worker_id: "a", status: "healthy", vpn_ip: "10.42.0.1", components: {dht: "UNREACHABLE"}},
        stats: {worker_id: "a", backends: [{name: "ocr", healthy: true, rss_bytes: 2048}],
                capabilities: {ram_bytes: 1024, gpus: [{name: "H200", memory_total_bytes: 100, memory_free_bytes: 40}]}},
        services: {services: [{name: "ocr", providers: [
          {worker_id: "a", url: "local", local: true, healthy: true},
          {worker_id: "b", url: "https://10.42.0.2:8443", healthy: true, record_age_seconds: 4, gpu_model: "L4"}]},
          {name: "chat", providers: [{worker_id: "c", url: "https://10.42.0.3:8443", healthy: true, record_age_seconds: 9}]}]},
        peers: {peers: [], forwarding: [{service: "ocr", worker_id: "b", reachable: true, ejected: false, requests: 3},
                                        {service: "chat", worker_id: "c", reachable: false, ejected: false,
                                         connect_failures: 2, address: "10.42.0.3:8443"}]},
        models: {data: [{id: "m1", kind: "chat", nodes: [{worker_id: "c", service: "chat", load_percent: 70}]},
                        {id: "alias", alias_of: "m1", nodes: [{worker_id: "c", service: "chat", load_percent: 70}]}]},
      };
      const first = M.buildNodes(snap, new Map(), 1000);
      const without = {...snap, services: {services: [snap.services.services[0]]}, models: {data: []}};
      const later = M.buildNodes(without, first.seen, 5000);
      const forgotten = M.buildNodes(without, later.seen, 5000 + M.FORGET_GONE_MS);
      const events = M.nextEvents([], null, 1, M.conditions(snap, first.nodes, {"/stats": "HTTP 503"}), null);
      return {
        nodes: first.nodes.map((n) => [n.id, n.self, n.state, n.address, n.services.map((s) => s.name + ":" + s.health),
                                       n.models.map((m) => m.id), n.load]),
        selfHardware: [first.nodes[0].gpu.used, first.nodes[0].memory.ram, first.nodes[0].memory.backends],
        remoteGpu: first.nodes[1].gpu.name, recordAge: first.nodes[1].recordAge,
        later: later.nodes.map((n) => [n.id, n.state, n.lastSeen]), forgotten: forgotten.nodes.map((n) => n.id),
        events: events.map((e) => e.message),
        rate: M.requestRate({at: 0, routing: routing(1, 1, 0)}, {at: 2000, routing: routing(5, 3, 1)}),
        restarted: M.requestRate({at: 0, routing: routing(9, 9, 0)}, {at: 2000, routing: routing(1, 0, 0)}),
        single: M.requestRate(null, {at: 0, routing: routing(1, 1, 0)}),
        views: [M.parseView("?node=x", ""), M.parseView("?node=x", "#service=y"), M.parseView("", "#node=%20"),
                M.parseView("?service=a%2Fb", "")],
        resolved: [M.resolveView({kind: "node", name: "zz"}, first.nodes, [], true),
                   M.resolveView({kind: "node", name: "b"}, first.nodes, [], true),
                   M.resolveView({kind: "service", name: "ocr"}, [], [], false)],
        formats: [M.formatBytes(1536), M.formatBytes(139 * 2 ** 30), M.formatBytes(null), M.formatAge(4.2),
                  M.formatAge(600), M.formatRate(0), M.formatRate(12.34), M.hostOf("https://[::1]:8443"), M.hostOf("local")],
      };
    })()""")
    assert got["nodes"] == [
        ["a", True, "healthy", "10.42.0.1", ["ocr:healthy"], [], None],
        ["b", False, "up", "10.42.0.2:8443", ["ocr:reachable"], [], None],
        ["c", False, "unreachable", "10.42.0.3:8443", ["chat:unreachable"], ["m1"], 70],
    ]
    assert got["selfHardware"] == [60, 1024, 2048]
    assert (got["remoteGpu"], got["recordAge"]) == ("L4", 4)
    assert got["later"] == [["a", "healthy", 5000], ["b", "up", 5000], ["c", "gone", 1000]]
    assert got["forgotten"] == ["a", "b"]
    assert got["events"] == ["component dht is UNREACHABLE",
                             "c (10.42.0.3:8443) unreachable for chat: 2 failed connections", "GET /stats: HTTP 503"]
    assert got["rate"] == {"requests": 3, "failed": 0.5}
    assert got["restarted"] is None and got["single"] is None
    assert got["views"] == [{"kind": "node", "name": "x"}, {"kind": "service", "name": "y"}, {"kind": "mesh"},
                            {"kind": "service", "name": "a/b"}]
    assert got["resolved"] == [{"kind": "missing", "what": "node", "name": "zz", "known": ["a", "b", "c"]},
                               {"kind": "node", "name": "b"}, {"kind": "loading", "name": "ocr", "what": "service"}]
    assert got["formats"] == ["1.5 KiB", "139 GiB", "—", "4 s", "10 min", "0.0", "12", "[::1]:8443", None]
