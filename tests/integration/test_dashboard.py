"""deploy/'s dashboard and alerts against real nodes and a real Prometheus.

Two nodes in an overlay, each in its own network namespace (tests/netns.py): node1 hosts
the built-in LLM and embeddings, node2 embeddings too (so node1 balances that model over
both: Envoy's model:<id> cluster) and an echo service node1 forwards to. Prometheus runs
beside node1 with deploy/prometheus/prometheus.yml (1 s scrapes, these two targets) and its
rules. After some traffic, every query of every panel of deploy/grafana/meshworker-node.json
must return data, every alert rule must evaluate without error, and none may fire.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import yaml
from meshtest import BIN, REPO, wait_for
from netns import Lab
from test_observability import listening_port, prometheus_value

from services.common.rpc import nebula_pb2, nebula_pb2_grpc

pytestmark = pytest.mark.timeout(420)
DASHBOARD = REPO / "deploy" / "grafana" / "meshworker-node.json"
PROMETHEUS = REPO / "deploy" / "prometheus"
# Fixed ports: one namespace each.
NODE_ENV = {"MESHWORKER_GATEWAY_PORT": "8000", "MESHWORKER_PEER_PORT": "8443", "MESHWORKER_DHT_PORT": "8468",
            "MESHWORKER_NEBULA_PORT": "4242"}
ECHO = Path(__file__).parent.parent / "echo_backend.py"
FIRST = 'services = ["llm-inference", "rag-embeddings"]\n'
SECOND = (f'services = ["echo", "rag-embeddings"]\n[service.echo]\nurl = "http://127.0.0.1:9100"\n'
          f'command = "{sys.executable} {ECHO} 9100 echo"\n')
# What Grafana puts in a query before sending it: the rate window (Grafana takes 4 scrape
# intervals at least) and "All" of each variable (allValue).
GRAFANA = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m"}
PER_GPU = "meshworker_router_gpu_"  # series only where NVML sees a GPU


def cli(node, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(node.host.command([str(BIN / "meshworker"), *args]), env=node.env, cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)


def overlay_ip(node) -> str:
    """The node's overlay address ("" while it has none), from its nebula-agent."""
    try:
        with grpc.insecure_channel(f"unix:{node.runtime_dir / 'nebula-agent.sock'}") as channel:
            stub = nebula_pb2_grpc.NebulaAgentStub(channel)
            return stub.Status(nebula_pb2.StatusRequest(), timeout=5).overlay_ip
    except grpc.RpcError:
        return ""


@pytest.fixture(scope="module")
def lab():
    lab = Lab(prefix=f"mwd{os.getpid()}")
    for name in ("h1", "h2"):
        lab.add_host(name)
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def mesh(lab, start_module_node):
    """node1 inits the overlay, node2 joins it; node1 sees node2's embeddings model."""
    first, second = (start_module_node(toml, host=host, wait=False, **NODE_ENV)
                     for toml, host in zip((FIRST, SECOND), lab.hosts, strict=True))
    for node in (first, second):
        node.wait_healthy(timeout=240)  # three models load at once on this machine's cores
    init = cli(first, "init", "--advertise", first.host.address, "--sync-interval", "2s")
    assert init.returncode == 0, init.stderr
    address, token, ca, pin = re.search(r"meshworker join (\S+) --token (\S+) --ca-fingerprint (\S+) "
                                        r"--tls-fingerprint (\S+)", init.stdout).groups()
    join = cli(second, "join", address, "--token", token, "--ca-fingerprint", ca, "--tls-fingerprint", pin)
    assert join.returncode == 0, join.stderr
    wait_for(lambda: overlay_ip(first) and overlay_ip(second), 30, "both overlay addresses")

    def balanced():
        models = first.get("/v1/models").json()["data"]
        return len({n["worker_id"] for m in models if m["kind"] == "embedding" for n in m["nodes"]}) == 2
    wait_for(balanced, 60, "node1 to see node2's embeddings model", interval=1)
    # node2's echo record too: a lookup that runs before it is stored finds nothing, and the
    # miss is remembered for 5 s (the fresh-clone run once met exactly that).
    wait_for(lambda: first.get("/service/echo/hello").status == 200, 30, "node1 to reach node2's echo", interval=1)
    yield first, second
    with ThreadPoolExecutor(2) as pool:  # stopping one by one costs seconds each
        list(pool.map(lambda n: n.stop(), (first, second)))


@pytest.fixture(scope="module")
def prometheus(mesh):
    """deploy/prometheus/prometheus.yml with 1 s scrapes of both nodes, run in node1's
    namespace; its HTTP API's base URL there."""
    first, second = mesh
    workdir = Path(tempfile.mkdtemp(prefix="mw-dash-", dir="/tmp"))
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS / name) for name in config["rule_files"]]
    targets = ["127.0.0.1:8000", f"{second.host.address}:8000"]
    config["scrape_configs"][0]["static_configs"] = [{"targets": targets}]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(first.host.command([
        "prometheus", f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}", "--web.listen-address=127.0.0.1:0"]),
        stdout=log, stderr=subprocess.STDOUT)
    try:
        def listening():
            assert proc.poll() is None, (workdir / "prometheus.log").read_text()[-3000:]
            return listening_port(proc.pid)
        port = wait_for(listening, 30, "prometheus to listen")
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: first.host.call(prometheus_value, base, "sum(up)") == 2.0, 30, "both nodes scraped")
        yield lambda expr: first.host.call(query, base, expr), lambda path: first.host.call(api, base, path)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def api(base: str, path: str):
    with urllib.request.urlopen(base + path, timeout=10) as reply:
        return json.load(reply)["data"]


def query(base: str, expr: str) -> list[dict]:
    return api(base, f"/api/v1/query?query={urllib.parse.quote(expr)}")["result"]


@pytest.fixture(scope="module")
def traffic(mesh, prometheus):
    """Requests of every kind the dashboard shows, sent to node1."""
    first, _ = mesh
    models = {m["kind"]: m["id"] for m in first.get("/v1/models").json()["data"]}
    for _ in range(2):
        reply = first.post_json("/v1/chat/completions", {"model": models["chat"], "max_tokens": 8,
                                                         "messages": [{"role": "user", "content": "Hi"}]})
        assert reply.status == 200, reply.body
    for _ in range(3):  # balanced over node1's and node2's embeddings
        reply = first.post_json("/v1/embeddings", {"model": models["embedding"], "input": ["a cat"]})
        assert reply.status == 200, reply.body
    assert first.post_json("/service/rag-embeddings", {"texts": ["a cat"]}).status == 200  # the envelope
    for _ in range(3):  # forwarded to node2, found by a DHT lookup (the mesh fixture's first)
        reply = first.get("/service/echo/hello")
        assert reply.status == 200 and reply.headers["x-mesh-route"] == "forwarded", reply.body
    assert first.get("/service/nobody-hosts-this/x").status == 404  # a lookup that finds nothing
    return models


def grafana(expr: str) -> str:
    """expr as Grafana sends it with every variable at "All"."""
    for name, value in GRAFANA.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{?(instance|service|model)\}?", ".+", expr)


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(f"{p['title']} / {t['legendFormat']}", grafana(t["expr"]))
            for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]


def test_every_panel_query_returns_data(prometheus, traffic):
    run, _ = prometheus
    queries = dashboard_queries()
    gpus = run("meshworker_router_gpus")
    assert len(gpus) == 2
    no_gpu = all(float(s["value"][1]) == 0 for s in gpus)
    expected = [(name, expr) for name, expr in queries if not (no_gpu and PER_GPU in expr)]

    def empty() -> list[str]:
        return [f"{name}: {expr}" for name, expr in expected if not run(expr)]
    # Envoy's histograms reach its stats every 5 s, and each new series needs a scrape.
    try:
        wait_for(lambda: not empty(), 60, "every panel's queries to return data", interval=2)
    except AssertionError:
        pytest.fail("queries without data:\n" + "\n".join(empty()))
    assert len(expected) >= len(queries) - 3


def test_every_variable_lists_values(prometheus, traffic):
    run, _ = prometheus
    for variable in json.loads(DASHBOARD.read_text())["templating"]["list"]:
        if variable["type"] != "query":
            continue
        selector, label = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"]).groups()
        pattern = variable["regex"].strip("/")

        def listed(selector=selector, label=label, pattern=pattern) -> list[str]:
            return [v for v in {s["metric"][label] for s in run(f"count by ({label}) ({selector})")}
                    if re.search(pattern, v)]
        # the traffic's series reach Prometheus a scrape (and for Envoy's histograms, 5 s) later
        wait_for(listed, 60, f"variable {variable['name']} to list values", interval=2)


def test_every_metric_an_alert_reads_is_on_the_nodes_pages(prometheus, traffic):
    run, api_get = prometheus
    words = set(re.findall(r"\b(?:meshworker|envoy)_\w+", (PROMETHEUS / "rules.yml").read_text()))
    names = words - set(api_get("/api/v1/labels"))  # envoy_cluster_name and the like are labels

    assert len(names) >= 15

    def missing() -> set[str]:
        return {name for name in names if not run(f"count({name})")}
    try:  # the traffic's series reach Prometheus a scrape (and for Envoy's histograms, 5 s) later
        wait_for(lambda: not missing(), 60, "every metric an alert reads", interval=2)
    except AssertionError:
        pytest.fail(f"metrics no node exports: {sorted(missing())}")


def test_every_rule_evaluates_without_error_and_none_fires_on_a_healthy_mesh(prometheus, traffic):
    run, api_get = prometheus

    def rules() -> list[dict]:
        return [r for g in api_get("/api/v1/rules")["groups"] for r in g["rules"]]
    before = {r["name"]: r["lastEvaluation"] for r in rules()}  # evaluated after the traffic, once changed
    latest = wait_for(lambda: (now := rules()) and all(r["lastEvaluation"] != before[r["name"]] for r in now)
                      and now, 30, "every rule evaluated again")

    assert len(latest) == len(yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"][0]["rules"])
    assert [(r["name"], r["lastError"]) for r in latest if r["health"] != "ok"] == []
    assert run('ALERTS{alertstate="firing"}') == []
