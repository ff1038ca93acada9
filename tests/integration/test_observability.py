"""What an operator points at a node: the real grpcurl, a real Prometheus, promtool."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from meshtest import SENTENCE, render_png, wait_for

pytestmark = pytest.mark.timeout(180)
GRPCURL = str(Path(sys.executable).parent / "grpcurl")
# component → (its service, one real call, a fragment its answer must contain)
REAL_CALLS = {
    "nebula-agent": ("meshworker.v1.NebulaAgent", "Status", {}, '"reason": "no overlay configured'),
    "dht": ("meshworker.v1.Dht", "FindProviders", {"service": "vision-ocr"}, '"worker_id": "node1"'),
    "router": ("meshworker.v1.Router", "ListLocalServices", {}, '"name": "vision-ocr"'),
}


@pytest.fixture(scope="module")
def node(start_module_node):
    return start_module_node()


def grpcurl(node, component: str, *words: str, data: dict | None = None) -> str:
    """grpcurl -unix <component's socket> WORDS…, as an operator would type it."""
    flags = ["-plaintext", "-max-time", "5", "-unix"] + (["-d", json.dumps(data)] if data is not None else [])
    out = subprocess.run([GRPCURL, *flags, str(node.runtime_dir / f"{component}.sock"), *words],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("component", sorted(REAL_CALLS))
def test_grpcurl_lists_describes_checks_and_calls(node, component):
    service, method, request, expected = REAL_CALLS[component]
    listed = grpcurl(node, component, "list").split()
    assert {service, "grpc.health.v1.Health", "meshworker.v1.Metrics"} <= set(listed)
    assert f"rpc {method}" in grpcurl(node, component, "describe", service)
    assert '"status": "SERVING"' in grpcurl(node, component, "grpc.health.v1.Health/Check")
    # The node's own record reaches its dht up to a retry after the node is healthy.
    wait_for(lambda: expected in grpcurl(node, component, f"{service}/{method}", data=request), 10,
             f"{service}/{method} to answer {expected}")
    assert "meshworker_" in grpcurl(node, component, "meshworker.v1.Metrics/Collect")


def test_unix_sockets_are_private(node):
    for component in REAL_CALLS:
        assert (node.runtime_dir / f"{component}.sock").stat().st_mode & 0o777 == 0o600


def ours(exposition: str) -> str:
    """Our families of a /metrics page; Envoy's own follow its naming, not ours."""
    return "".join(line + "\n" for line in exposition.splitlines()
                   if line.removeprefix("# HELP ").removeprefix("# TYPE ").startswith("meshworker_"))


def test_promtool_accepts_metrics(node):
    text = node.get("/metrics").body.decode()
    out = subprocess.run(["promtool", "check", "metrics"], input=ours(text).encode(), capture_output=True,
                         timeout=30, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    for family in ("meshworker_api_envelope_requests_total", "meshworker_component_up",
                   "meshworker_dht_known_peers", "meshworker_router_service_healthy",
                   "meshworker_router_config_pushes_total", "meshworker_nebula_overlay_up",
                   "envoy_cluster_upstream_rq_total", "envoy_http_downstream_rq_total"):
        assert f"# TYPE {family.removesuffix('_total')}" in text


def socket_inodes(pid: int) -> set[str]:
    """The inodes of a process's sockets; a descriptor it closes while they are read is skipped."""
    found = set()
    for link in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = link.readlink().name
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def listening_port(pid: int) -> int | None:
    """The TCP port a process listens on, read from /proc (prometheus takes port 0 but says 0)."""
    inodes = socket_inodes(pid)
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
            return int(fields[1].split(":")[1], 16)
    return None


@pytest.fixture
def prometheus(node):
    workdir = Path(tempfile.mkdtemp(prefix="mw-prom-", dir="/tmp"))
    target = node.base_url.removeprefix("http://")
    (workdir / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: meshworker\n"
        f"    static_configs:\n      - targets: ['{target}']\n")
    proc = subprocess.Popen(["prometheus", f"--config.file={workdir / 'prometheus.yml'}",
                             f"--storage.tsdb.path={workdir / 'data'}", "--web.listen-address=127.0.0.1:0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port = wait_for(lambda: listening_port(proc.pid), 30, "prometheus to listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


def prometheus_value(base: str, query: str) -> float | None:
    with urllib.request.urlopen(f"{base}/api/v1/query?query={urllib.parse.quote(query)}", timeout=5) as r:
        result = json.load(r)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_request_counters_just_incremented(node, prometheus):
    """The envelope is counted by the api, the backend's own API by Envoy: both on one page."""
    payload = {"image_base64": base64.b64encode(render_png(SENTENCE)).decode()}
    envelope = 'sum(meshworker_api_envelope_requests_total{service="vision-ocr",code="2xx"})'
    proxied = 'sum(envoy_cluster_upstream_rq_total{envoy_cluster_name="local_vision-ocr"})'
    wait_for(lambda: prometheus_value(prometheus, "up") == 1.0, 30, "a first scrape")
    before = {q: prometheus_value(prometheus, q) or 0.0 for q in (envelope, proxied)}
    for _ in range(3):
        assert node.post_json("/service/vision-ocr", payload).status == 200
        assert node.get("/service/vision-ocr/health").status == 200
    for query in (envelope, proxied):
        wait_for(lambda q=query: prometheus_value(prometheus, q) == before[q] + 3, 30,
                 f"prometheus to see the three requests in {query}")
    assert prometheus_value(prometheus, 'meshworker_component_up{component="router"}') == 1.0
