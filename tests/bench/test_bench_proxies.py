"""The baseline proxies' configs: Envoy's bootstrap and HAProxy's config are accepted by the
real binaries' own checks, and Envoy's bound port is read from its admin API's answer."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from bench import proxies
from services.identity import mesh_ca

LISTENERS = {"listener_statuses": [
    {"name": "other", "local_address": {"socket_address": {"address": "127.0.0.1", "port_value": 1111}}},
    {"name": "bench", "local_address": {"socket_address": {"address": "127.0.0.1", "port_value": 43210}}},
]}


def test_envoy_bootstrap_routes_everything_to_the_backend() -> None:
    bootstrap = proxies.envoy_bootstrap(5678, Path("/tmp/x/admin.sock"))
    assert bootstrap["admin"] == {"address": {"pipe": {"path": "/tmp/x/admin.sock"}}}
    [listener] = bootstrap["static_resources"]["listeners"]
    assert listener["name"] == proxies.ENVOY_LISTENER
    assert listener["address"]["socket_address"]["port_value"] == 0
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert "access_log" not in manager
    [cluster] = bootstrap["static_resources"]["clusters"]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 5678}
    assert manager["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == cluster["name"]
    assert "per_connection_buffer_limit_bytes" not in cluster | listener


def test_envoy_bootstrap_may_name_a_unix_socket() -> None:
    bootstrap = proxies.envoy_bootstrap(Path("/tmp/x/svc.sock"), Path("/tmp/x/admin.sock"))
    [cluster] = bootstrap["static_resources"]["clusters"]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"] == {"pipe": {"path": "/tmp/x/svc.sock"}}


@pytest.mark.timeout(30)
def test_envoy_accepts_the_bootstrap(tmp_path: Path) -> None:
    conf = tmp_path / "envoy.json"
    conf.write_text(json.dumps(proxies.envoy_bootstrap(5678, tmp_path / "admin.sock")))
    done = subprocess.run([proxies.envoy_binary({}), "--mode", "validate", "-c", str(conf),
                           "--disable-hot-restart"], capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_envoy_binary_is_the_one_named_else_the_wheels() -> None:
    assert proxies.envoy_binary({"MESHWORKER_ENVOY_BIN": "/opt/envoy"}) == "/opt/envoy"
    assert Path(proxies.envoy_binary({"MESHWORKER_ENVOY_BIN": ""})).name == "envoy"


def test_listener_port_is_the_named_listeners() -> None:
    assert proxies.listener_port(LISTENERS, "bench") == 43210
    assert proxies.listener_port(LISTENERS, "missing") is None
    assert proxies.listener_port({}, "bench") is None


@pytest.mark.timeout(30)
def test_haproxy_accepts_its_config_on_an_inherited_socket(tmp_path: Path) -> None:
    binary = shutil.which("haproxy", path="/usr/sbin:/usr/bin:/sbin")
    if binary is None:
        pytest.skip("haproxy not installed (apt-get install haproxy)")
    with socket.create_server(("127.0.0.1", 0)) as sock:
        conf = tmp_path / "haproxy.cfg"
        conf.write_text(proxies.HAPROXY_CONF.format(fd=sock.fileno(), upstream_port=5678))
        done = subprocess.run([binary, "-c", "-f", str(conf)], pass_fds=[sock.fileno()],
                              capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def credentials(worker_id: str):
    ca = mesh_ca.secret_mode_ca("a-secret-of-the-bench-mesh")
    key = ec.generate_private_key(ec.SECP256R1())
    return mesh_ca.credentials(ca.certificate, key, mesh_ca.issue_node_certificate(ca, key.public_key(), worker_id,
                                                                                    time.time()))


@pytest.mark.timeout(30)
def test_a_chained_envoy_speaks_mutual_tls_as_the_gateway_does(tmp_path: Path) -> None:
    back, front = credentials("back"), credentials("front")
    serving = proxies.envoy_bootstrap(5678, tmp_path / "admin.sock", serve_mtls=back)
    connecting = proxies.envoy_bootstrap(5679, tmp_path / "admin.sock", upstream_mtls=front)
    server_tls = serving["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]
    client_tls = connecting["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    assert server_tls["require_client_certificate"] is True
    for tls in (server_tls, client_tls):
        [san] = tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
        assert san["matcher"]["prefix"] == mesh_ca.spiffe_prefix(back.mesh_id)  # one mesh CA
    for bootstrap in (serving, connecting):
        conf = tmp_path / "envoy.json"
        conf.write_text(json.dumps(bootstrap))
        done = subprocess.run([proxies.envoy_binary({}), "--mode", "validate", "-c", str(conf),
                               "--disable-hot-restart"], capture_output=True, text=True, timeout=20, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
