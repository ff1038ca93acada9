"""gateway.json and node.json, written and read through services/common/runtime_files alone."""

from __future__ import annotations

import time

import pytest

from services.common import runtime_files
from services.common.config import load
from services.common.runtime_files import GatewayAddress


@pytest.fixture
def cfg(tmp_path):
    cfg = load({"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_SERVICES": ""})
    cfg.runtime_dir.mkdir()
    return cfg


def test_the_gateway_address_round_trips_and_is_absent_until_written(cfg):
    assert runtime_files.read_gateway(cfg) is None

    runtime_files.write_gateway(cfg, GatewayAddress("0.0.0.0", 18000, 18443))

    assert runtime_files.read_gateway(cfg) == GatewayAddress("0.0.0.0", 18000, 18443)


def test_a_torn_or_foreign_gateway_file_reads_as_not_written(cfg):
    runtime_files.gateway_path(cfg).write_text('{"host": "0.0.0.0", "port": ')
    assert runtime_files.read_gateway(cfg) is None
    runtime_files.gateway_path(cfg).write_text('{"host": "0.0.0.0"}')
    assert runtime_files.read_gateway(cfg) is None


@pytest.mark.parametrize(("host", "url"), [("0.0.0.0", "http://127.0.0.1:8000"), ("::", "http://127.0.0.1:8000"),
                                           ("10.0.0.5", "http://10.0.0.5:8000"), ("::1", "http://[::1]:8000")])
def test_a_local_process_reaches_the_client_listener_at(host, url):
    assert GatewayAddress(host, 8000, 0).local_url == url


def test_the_start_time_is_what_up_wrote_else_now(cfg):
    before = time.time()
    assert runtime_files.started_at(cfg) >= before  # no `up`: a component run on its own

    runtime_files.write_started(cfg, 1_700_000_000.0)

    assert runtime_files.started_at(cfg) == 1_700_000_000.0
