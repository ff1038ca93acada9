"""nebula-agent's core outside a node: reconcile writes config and program, Status says why."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from services.common import config
from services.nebula import cli
from services.nebula.agent import logs, supervise
from services.nebula.agent.core import NOT_A_MEMBER, Agent, status_reason
from services.nebula.agent.main import NebulaAgentServicer
from services.nebula.overlay import node, render


def cfg_for(state_dir, **env):
    return config.load({"MESHWORKER_STATE_DIR": str(state_dir), "MESHWORKER_RUNTIME_DIR": str(state_dir / "run"),
                        **env})


class NoSupervisor:
    def available(self) -> bool:
        return False


async def test_a_node_outside_any_mesh_says_how_to_join(tmp_path):
    agent = Agent(cfg_for(tmp_path), NoSupervisor())

    assert await agent.reconcile() == "none"
    status = agent.status()
    assert not status.enabled and status.reason == NOT_A_MEMBER
    assert supervise.nebula_program(agent.cfg) is None


async def test_reconcile_renders_the_config_once(ca_paths):
    agent = Agent(cfg_for(ca_paths.root.parent), NoSupervisor())

    assert await agent.reconcile() == "restart"  # no config before: nebula must (re)start
    assert await agent.reconcile() == "none"
    parsed = render.parse(ca_paths.config.read_text())
    assert parsed["lighthouse"]["am_lighthouse"] and parsed["pki"]["cert"] == str(ca_paths.host_crt)


async def test_status_without_nebula_running_names_the_missing_tun(ca_paths):
    agent = Agent(cfg_for(ca_paths.root.parent), NoSupervisor())
    await agent.reconcile()
    status = agent.status()

    assert status.enabled and not status.overlay_ip and "tun device mesh4242 is missing" in status.reason
    assert status.am_authority and status.am_lighthouse and status.cert_name == "lh"
    assert status.cert_expires_unix > 0 and status.record_serial == 1 and list(status.lighthouses) == ["10.42.0.1"]


async def test_corrupt_state_is_reported_and_nebula_left_alone(ca_paths):
    ca_paths.mesh.write_text("{")
    agent = Agent(cfg_for(ca_paths.root.parent), NoSupervisor())

    assert await agent.reconcile() == "none"
    assert agent.status().enabled and "mesh.json is corrupt" in agent.status().reason
    assert not ca_paths.config.exists()


def test_status_reasons(ca_paths):
    state = node.load(ca_paths)

    assert status_reason(state, True, False, 0, "mesh0") == ""
    assert "revoked" in status_reason(state, True, True, 0, "mesh0")
    assert "expired" in status_reason(state, True, False, state.cert.not_after, "mesh0")
    assert "mesh0 is missing" in status_reason(state, False, False, 0, "mesh0")
    assert status_reason(state, False, False, 0, "mesh0", "tun: permission denied").endswith(
        "nebula's last error: tun: permission denied")


async def test_nebulas_last_error_is_kept_until_it_comes_up(tmp_path):
    agent = Agent(cfg_for(tmp_path), NoSupervisor())
    agent.note_nebula_log(logs.parse('{"level":"error","msg":"Failed to get a tun/tap device","error":"EPERM"}'))
    assert agent.last_nebula_error == 'Failed to get a tun/tap device error="EPERM"'

    agent.note_nebula_log(logs.parse('{"level":"info","msg":"Nebula interface is active"}'))
    assert agent.last_nebula_error == ""


async def test_the_servicer_metrics_follow_our_naming(tmp_path):
    registry = CollectorRegistry()
    NebulaAgentServicer(cfg_for(tmp_path), registry)
    names = {f.name for f in registry.collect()}

    assert {"meshworker_nebula_overlay_up", "meshworker_nebula_stats_up"} <= names
    assert all(n.startswith("meshworker_nebula_") for n in names)


def test_the_program_section_runs_nebula_on_the_rendered_config(ca_paths):
    cfg = cfg_for(ca_paths.root.parent)
    section = supervise.nebula_program(cfg)

    assert section.startswith("[program:nebula]\n")
    assert f"-config {ca_paths.config}\n" in section and "autorestart=true" in section
    assert f"stdout_logfile={cfg.runtime_dir / 'nebula.log'}" in section
    assert supervise.write_program(cfg) and not supervise.write_program(cfg)


@pytest.mark.parametrize(("ip_json", "found"), [
    (('[{"ifname":"eth0","addr_info":[{"local":"10.77.0.11"}]},'
     '{"ifname":"mesh4242","addr_info":[{"local":"10.42.0.1"}]}]'), ["10.77.0.11"]),
    ("[]", []), ("", []),
])
def test_underlay_addresses_leave_out_the_overlay(ip_json, found):
    assert cli.global_ipv4(ip_json, "10.42.0.0/16") == found
