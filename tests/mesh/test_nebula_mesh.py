"""Real nodes in network namespaces: `init` on one, `join` on two, then the overlay's
promises: every pair talks over it, crashes cost what DESIGN.md says, revoke cuts a node off.
The nodes share no mesh secret: only the overlay's CA makes them trust each other's keys.

The tests share the nodes and pass in any order: what a test changes for good (a second
lighthouse joins, a member is revoked) happens to a node of its own, and a node that is
restarted or loses its nebula is waited for until it is back."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from meshtest import BIN, REPO, peer_post, wait_for
from netns import Lab

from services.common.config import MESH_SECRET_FILE
from services.common.rpc import nebula_pb2, nebula_pb2_grpc
from services.identity.mesh_ca import secret_mode_credentials
from services.identity.overlay import overlay_mode_credentials

pytestmark = pytest.mark.timeout(180)
# Fixed ports: one namespace each. No MESHWORKER_MESH_SECRET: `up` makes each node a secret
# of its own, so trust between the nodes can come only from the overlay's CA.
NODE_ENV = {"MESHWORKER_GATEWAY_PORT": "8000", "MESHWORKER_PEER_PORT": "8443", "MESHWORKER_DHT_PORT": "8468",
            "MESHWORKER_NEBULA_PORT": "4242"}
ECHO = Path(__file__).parent.parent / "echo_backend.py"
# node2 hosts a service, so a request at node3 is forwarded over the overlay.
HOSTS_ECHO = f'services = ["echo"]\n[service.echo]\nurl = "http://127.0.0.1:9100"\n' \
             f'command = "{sys.executable} {ECHO} 9100 echo"\n'
NO_SERVICES = "services = []\n"
JOIN = re.compile(r"^\s*meshworker join (\S+) --token (\S+) --ca-fingerprint (\S+) --tls-fingerprint (\S+)",
                  re.MULTILINE)


def cli(node, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(node.host.command([str(BIN / "meshworker"), *args]), env=node.env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False)


def status(node) -> nebula_pb2.StatusResponse:
    # The agent's unix socket is a file: reachable from outside the node's namespace.
    with grpc.insecure_channel(f"unix:{node.runtime_dir / 'nebula-agent.sock'}") as channel:
        return nebula_pb2_grpc.NebulaAgentStub(channel).Status(nebula_pb2.StatusRequest(), timeout=5)


def status_when_up(node) -> nebula_pb2.StatusResponse | None:
    try:
        return status(node)
    except grpc.RpcError:
        return None  # restarting


def reaches(src, dst_ip: str, timeout: float = 1.0) -> str | None:
    """The worker id answering on dst_ip's gateway, fetched from inside src's namespace."""
    def fetch():
        try:
            with urllib.request.urlopen(f"http://{dst_ip}:8000/health", timeout=timeout) as reply:
                return json.load(reply)["worker_id"]
        except (OSError, ValueError, urllib.error.URLError):
            return None
    return src.host.call(fetch)


def join_args(output: str) -> list[str]:
    address, token, ca, pin = JOIN.search(output).groups()
    return ["join", address, "--token", token, "--ca-fingerprint", ca, "--tls-fingerprint", pin]


@pytest.fixture(scope="module")
def lab():
    lab = Lab(prefix=f"mwn{os.getpid()}")
    for name in ("h1", "h2", "h3", "h4", "h5"):
        lab.add_host(name)
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def mesh(lab, start_module_node):
    """node1 inits, node2 and node3 join at once; node4 runs outside until a test joins it as a
    second lighthouse (second_lighthouse); node5 runs outside for good."""
    nodes = [start_module_node(HOSTS_ECHO if h.name == "h2" else NO_SERVICES, host=h, wait=False, **NODE_ENV)
             for h in lab.hosts]
    for node in nodes:
        node.wait_healthy()
    first, second, third, *_ = nodes
    out = cli(first, "init", "--advertise", first.host.address, "--sync-interval", "2s")
    assert out.returncode == 0, out.stderr
    assert "Overlay up: 10.42.0.1" in out.stdout, out.stdout
    second_join = join_args(cli(first, "token").stdout)
    with ThreadPoolExecutor(2) as pool:  # two joins at the same moment
        joins = list(pool.map(lambda a: cli(*a), [(second, *join_args(out.stdout)), (third, *second_join)]))
    assert [j.returncode for j in joins] == [0, 0], [j.stderr for j in joins]
    yield {n.env["MESHWORKER_WORKER_ID"]: n for n in nodes}, out.stdout
    with ThreadPoolExecutor(len(nodes)) as pool:  # stopping one by one costs seconds each
        list(pool.map(lambda n: n.stop(), nodes))


def overlay_ips(mesh) -> dict[str, str]:
    """Every member's overlay address, once each reports it (a nebula restart blanks it a moment)."""
    def all_up() -> dict[str, str] | None:
        statuses = {name: status_when_up(node) for name, node in mesh[0].items()}
        if any(s is None or (s.enabled and not s.overlay_ip) for s in statuses.values()):
            return None
        return {name: s.overlay_ip for name, s in statuses.items() if s.enabled}
    return wait_for(all_up, 30, "every member's overlay address")


def test_concurrent_joins_got_different_addresses_and_the_overlay_is_up(mesh):
    nodes, _ = mesh
    ips = overlay_ips(mesh)
    first_three = {name: ips[name] for name in ("node1", "node2", "node3")}

    assert ips["node1"] == "10.42.0.1" and sorted(first_three.values()) == ["10.42.0.1", "10.42.0.2", "10.42.0.3"]
    for name, ip in ips.items():  # a moment behind the agent after a test restarted a nebula
        wait_for(lambda n=name, i=ip: (nodes[n].health() or {}).get("vpn_ip") == i, 15, f"{name}'s /health vpn_ip")
    outside = nodes["node5"].health()
    assert outside["vpn_ip"] is None and "no overlay configured" in outside["vpn_reason"]


def test_every_pair_reaches_each_other_over_the_overlay(mesh):
    nodes, ips = mesh[0], overlay_ips(mesh)
    for src in (nodes[name] for name in ips):
        for dst, ip in ips.items():
            wait_for(lambda s=src, i=ip: reaches(s, i), 20, f"{src.env['MESHWORKER_WORKER_ID']} to reach {dst}")
            assert reaches(src, ip) == dst


def test_a_forwarded_request_travels_over_the_overlay(mesh):
    nodes, ips = mesh[0], overlay_ips(mesh)

    def forwarded():
        reply = nodes["node3"].get("/service/echo/whoami")
        return reply if reply.status == 200 else None

    reply = wait_for(forwarded, 60, "node3 to find node2's echo through the DHT on the overlay")
    assert (reply.headers["X-Mesh-Route"], reply.headers["X-Mesh-Worker"]) == ("forwarded", "node2")
    # node2's Envoy saw the request come from node3's overlay address, and said so.
    assert reply.json()["forwarded_for"].split(",")[-1].strip() == ips["node3"]
    providers = nodes["node3"].get("/mesh/services").json()["services"]
    assert [p["url"] for s in providers if s["name"] == "echo" for p in s["providers"]] == \
        [f"https://{ips['node2']}:8443"]


def to_node2(nodes, sender, credentials, workdir: Path, address: str | None = None) -> int | str:
    """GET-like POST to node2's peer listener for its echo, from `sender`'s namespace, at
    `address`, else over the overlay when the sender is in it (else node2's underlay address)."""
    overlay = overlay_mode_credentials(nodes["node2"].state_dir)
    if address is None:
        in_overlay = status_when_up(sender).overlay_ip
        address = status(nodes["node2"]).overlay_ip if in_overlay else nodes["node2"].host.address
    return sender.host.call(peer_post, address, 8443, overlay.trusted_ca_pem, credentials, workdir,
                            "/service/echo", {"X-Mesh-Service": "echo", "X-Mesh-Envelope": "1"})


def test_only_certificates_of_the_mesh_ca_may_forward(mesh, tmp_path):
    nodes = mesh[0]
    outsider = nodes["node5"]  # runs, outside the overlay, with a mesh secret of its own
    own_secret = (outsider.state_dir / MESH_SECRET_FILE).read_text().strip()
    self_issued = secret_mode_credentials(own_secret, tmp_path / "node5", "node5", time.time())
    assert to_node2(nodes, outsider, self_issued, tmp_path / "a") != 200
    member = overlay_mode_credentials(nodes["node3"].state_dir)
    served_member(nodes, nodes["node3"], member, tmp_path / "b")


def served_member(nodes, sender, credentials, workdir: Path, address: str | None = None) -> None:
    """Until node2 serves the member: a test before may have restarted node2 or a nebula."""
    def served() -> bool:
        try:
            return to_node2(nodes, sender, credentials, workdir, address) == 200
        except grpc.RpcError:  # an agent restarting: its status a moment later
            return False
    wait_for(served, 30, "node2 to serve a member's certificate")


def udp_listeners(node, port: int) -> set[str]:
    """The local address:port of every UDP socket bound to `port` in node's namespace."""
    out = subprocess.run(node.host.command(["ss", "-Hlun", f"sport = :{port}"]), capture_output=True, text=True,
                         timeout=10, check=True).stdout
    return {line.split()[3] for line in out.splitlines() if line.strip()}


def test_dht_and_peer_traffic_stay_in_the_overlay(mesh, tmp_path):
    """Overlay means overlay (issue 12 M5): node2's DHT is bound to its overlay address alone,
    and its peer listener, which serves a member's certificate over the overlay, closes the
    connection that member makes to node2's underlay address."""
    nodes, ips = mesh[0], overlay_ips(mesh)
    wait_for(lambda: udp_listeners(nodes["node2"], 8468) == {f"{ips['node2']}:8468"}, 20,
             "node2's DHT on its overlay address alone")
    member = overlay_mode_credentials(nodes["node3"].state_dir)
    served_member(nodes, nodes["node3"], member, tmp_path / "a", address=ips["node2"])
    underlay = to_node2(nodes, nodes["node3"], member, tmp_path / "b", address=nodes["node2"].host.address)
    assert underlay not in (200, 403, 404)  # refused before any HTTP: no TLS handshake at all


def test_status_reports_certificate_lighthouse_and_tunnels(mesh):
    nodes = mesh[0]
    member = wait_for(lambda: (s := status(nodes["node2"])).tunnels_up >= 2 and s, 20, "nebula's tunnel gauge")

    assert member.lighthouse_reachable and member.cert_name == "node2" and member.network == "10.42.0.0/16"
    assert member.cert_expires_unix > 0 and member.lighthouses[0] == "10.42.0.1"  # node4 may be second
    assert status(nodes["node1"]).am_authority and not member.am_authority


def test_nebula_metrics_are_in_the_node_metrics(mesh):
    node = mesh[0]["node2"]
    text = wait_for(lambda: (t := node.get("/metrics").body.decode()) and "meshworker_nebula_tunnels " in t and t,
                    20, "nebula's stats in /metrics")

    assert "meshworker_nebula_stats_up 1.0" in text and "meshworker_nebula_overlay_up 1.0" in text


def test_refusals_reach_the_joiner_with_the_reason(mesh):
    first, outsider, output = mesh[0]["node1"], mesh[0]["node5"], mesh[1]
    args = join_args(output)
    lighthouses = list(status(first).lighthouses)
    used_up = cli(outsider, *args)  # init's token had one use, spent by a join in the fixture
    wrong_ca = cli(outsider, *args[:5], "ab" * 32, *args[6:])

    assert used_up.returncode == 1 and "used up" in used_up.stderr
    assert wrong_ca.returncode == 1 and "the token was not sent" in wrong_ca.stderr
    assert list(status(first).lighthouses) == lighthouses and not (outsider.state_dir / "nebula").exists()


@pytest.fixture(scope="module")
def second_lighthouse(mesh):
    """node4, joined as a second lighthouse, once for the module, by the first test that asks."""
    nodes = mesh[0]
    token = cli(nodes["node1"], "token", "--lighthouse")
    out = cli(nodes["node4"], *join_args(token.stdout), "--lighthouse", "--advertise", nodes["node4"].host.address)
    assert out.returncode == 0, out.stderr
    return nodes["node4"]


def test_a_second_lighthouse_keeps_new_tunnels_possible_without_the_first(mesh, second_lighthouse):
    nodes = mesh[0]
    lighthouses = ["10.42.0.1", status(second_lighthouse).overlay_ip]
    for name in ("node2", "node3"):  # the CA holder's record reaches every member
        wait_for(lambda n=name: list(status(nodes[n]).lighthouses) == lighthouses, 15, f"{name} to list both")
    ips = overlay_ips(mesh)
    nodes["node1"].supervisorctl("stop", "nebula")
    nodes["node2"].supervisorctl("restart", "nebula")  # drop node2's tunnels: it must ask a lighthouse
    try:
        wait_for(lambda: reaches(nodes["node2"], ips["node3"]) == "node3", 20, "a new tunnel via lighthouse 2")
    finally:
        nodes["node1"].supervisorctl("start", "nebula")
    wait_for(lambda: reaches(nodes["node2"], ips["node1"]) == "node1", 20, "node1 back on the overlay")


def test_a_node_that_joined_while_running_is_trusted_at_once(second_lighthouse):
    """node4 ran outside the overlay until it joined: its router now hands Envoy the
    certificate the CA gave it at join, so node2 serves what node4 forwards."""
    node4 = second_lighthouse

    def forwarded():
        reply = node4.get("/service/echo/whoami")
        return reply if reply.status == 200 else None

    reply = wait_for(forwarded, 60, "node4 to find node2's echo and be trusted by it")
    assert (reply.headers["X-Mesh-Route"], reply.headers["X-Mesh-Worker"]) == ("forwarded", "node2")


def pid_of_program(node, program: str) -> int:
    return int(node.supervisorctl("pid", program) or 0)


def test_kill_9_of_nebula_agent_leaves_the_overlay_flowing(mesh):
    nodes, ips = mesh[0], overlay_ips(mesh)
    old = pid_of_program(nodes["node2"], "nebula-agent")
    os.kill(old, signal.SIGKILL)

    assert reaches(nodes["node2"], ips["node3"]) == "node3"
    assert reaches(nodes["node3"], ips["node2"]) == "node2"
    wait_for(lambda: pid_of_program(nodes["node2"], "nebula-agent") not in (0, old), 10, "the agent's restart")
    wait_for(lambda: (s := status_when_up(nodes["node2"])) and s.overlay_ip == ips["node2"], 10,
             "the agent to report again")


def test_kill_9_of_nebula_is_repaired_by_supervisord(mesh):
    nodes, ips = mesh[0], overlay_ips(mesh)
    old = pid_of_program(nodes["node3"], "nebula")
    os.kill(old, signal.SIGKILL)

    wait_for(lambda: pid_of_program(nodes["node3"], "nebula") not in (0, old), 10, "supervisord to restart nebula")
    for peer in ("node1", "node2"):
        wait_for(lambda p=peer: reaches(nodes["node3"], ips[p]) == p, 20, f"node3 to reach {peer} again")
        wait_for(lambda p=peer: reaches(nodes[p], ips["node3"]) == "node3", 20, f"{peer} to reach node3 again")


def test_a_restarted_node_comes_back_on_the_same_address(mesh):
    nodes, ips = mesh[0], overlay_ips(mesh)
    nodes["node2"].stop()
    nodes["node2"].start()

    # Until its api answers, Envoy's own 503 (an error object, no vpn_ip) stands for /health.
    health = wait_for(lambda: (h := nodes["node2"].health()) and h.get("vpn_ip") and h, 30, "node2's overlay")
    assert health["vpn_ip"] == ips["node2"]
    wait_for(lambda: reaches(nodes["node2"], ips["node1"]) == "node1", 20, "node2 to reach node1")
    nodes["node2"].wait_healthy(timeout=30)  # the tests after this one take it whole


def member_to_revoke(mesh, lab, start_module_node):
    """A node that joins only to be revoked, so the module's members stay members."""
    node = start_module_node(NO_SERVICES, host=lab.add_host("h6"), **NODE_ENV)
    out = cli(node, *join_args(cli(mesh[0]["node1"], "token").stdout))
    assert out.returncode == 0, out.stderr
    return node


def test_after_revoke_the_node_can_no_longer_reach_the_others(mesh, second_lighthouse, lab, start_module_node,
                                                              tmp_path):
    nodes = mesh[0]
    doomed = member_to_revoke(mesh, lab, start_module_node)
    name = doomed.env["MESHWORKER_WORKER_ID"]
    ips = overlay_ips(mesh)
    ips[name] = wait_for(lambda: (s := status_when_up(doomed)) and s.overlay_ip, 30, f"{name}'s overlay address")
    wait_for(lambda: reaches(doomed, ips["node1"]) == "node1", 20, f"{name} to reach node1")
    out = cli(nodes["node1"], "revoke", name)
    assert out.returncode == 0, out.stderr

    for peer in ("node1", "node2"):
        wait_for(lambda p=peer: reaches(doomed, ips[p]) is None, 30, f"{name} to be cut off from {peer}")
        assert reaches(nodes[peer], ips[name]) is None
    wait_for(lambda: reaches(second_lighthouse, ips[name]) is None, 15, f"lighthouse 2 to block {name} too")
    assert reaches(nodes["node1"], ips["node2"]) == "node2" and reaches(nodes["node2"], ips["node1"]) == "node1"
    assert status(doomed).revoked and "revoked" in doomed.health()["vpn_reason"]
    # Nor may it forward on the underlay, which an overlay's peer listeners do not serve (and its
    # certificate is on the CA's revocation list: test_nebula_enrollment checks that on its own).
    revoked = overlay_mode_credentials(doomed.state_dir)
    wait_for(lambda: to_node2(nodes, doomed, revoked, tmp_path) != 200, 15,
             f"node2's Envoy to refuse {name}'s revoked certificate")

