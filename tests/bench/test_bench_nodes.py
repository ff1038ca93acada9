"""The node plumbing that needs no node: ports chosen for it, its programs' names."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bench import procs
from bench.targets import Node

pytestmark = pytest.mark.timeout(10)


def test_free_ports_differ_and_can_be_bound() -> None:
    ports = procs.free_tcp_ports(3)
    assert len(set(ports)) == 3
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("0.0.0.0", port))


def test_a_program_is_named_by_supervisord_else_by_its_command() -> None:
    envoy = procs.ProcessInfo(41, "envoy")
    assert Node.program_name(envoy, {41: "gateway"}) == "gateway"
    assert Node.program_name(envoy, {}) == "gateway"  # still STARTING: supervisorctl gives no pid
    assert Node.program_name(procs.ProcessInfo(42, "router"), {}) == "router"


def test_a_node_advertises_its_peer_listener_over_https(tmp_path: Path) -> None:
    node = Node("http://127.0.0.1:1", state_dir=tmp_path)
    node.peer_port = 45443
    assert node.peer_url == "https://127.0.0.1:45443"
