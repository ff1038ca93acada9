"""Tests for services.common.capabilities: the pure summary, NVML reading, and collect()."""

from __future__ import annotations

import socket
import types

import pynvml
import pytest

from services.common import capabilities

GIB = 2**30
MIB = 2**20


class FakeNVML:
    """Stands in for the pynvml module: same function names, canned devices."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices=(), init_error=False, util_error_for=()):
        self.devices = list(devices)
        self.init_error = init_error
        self.util_error_for = set(util_error_for)
        self.calls: list[str] = []

    def nvmlInit(self):
        self.calls.append("init")
        if self.init_error:
            raise self.NVMLError("driver not loaded")

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("handle", index)

    def nvmlDeviceGetName(self, handle):
        return self.devices[handle[1]]["name"]

    def nvmlDeviceGetMemoryInfo(self, handle):
        dev = self.devices[handle[1]]
        return types.SimpleNamespace(total=dev["total"], free=dev["free"], used=0)

    def nvmlDeviceGetUtilizationRates(self, handle):
        if handle[1] in self.util_error_for:
            raise self.NVMLError("not supported")
        return types.SimpleNamespace(gpu=self.devices[handle[1]]["util"], memory=0)


TWO_GPUS = [
    {"name": b"NVIDIA GeForce RTX 4090", "total": 24576 * MIB, "free": 20000 * MIB, "util": 37},
    {"name": "NVIDIA A100-SXM4-80GB", "total": 81920 * MIB, "free": 81000 * MIB, "util": 0},
]

EXPECTED_TWO_GPUS = [
    {
        "name": "NVIDIA GeForce RTX 4090",
        "memory_total_bytes": 24576 * MIB,
        "memory_free_bytes": 20000 * MIB,
        "utilization_percent": 37,
    },
    {
        "name": "NVIDIA A100-SXM4-80GB",
        "memory_total_bytes": 81920 * MIB,
        "memory_free_bytes": 81000 * MIB,
        "utilization_percent": 0,
    },
]


# --- summarize -------------------------------------------------------------------------


def test_summarize_cpu_only_box():
    doc = capabilities.summarize("box1", 16, 64 * GIB, [], None)
    assert doc == {
        "hostname": "box1",
        "cpu_cores": 16,
        "has_gpu": False,
        "gpu_type": None,
        "gpu_memory": None,
        "worker_type": "cpu",
        "low_latency": False,
        "latency_ms": None,
        "has_edge": False,
        "ram": "64GB",
        "ram_bytes": 64 * GIB,
        "gpus": [],
    }
    # The seed document's keys come first, in the seed's order.
    assert list(doc)[:10] == [
        "hostname", "cpu_cores", "has_gpu", "gpu_type", "gpu_memory",
        "worker_type", "low_latency", "latency_ms", "has_edge", "ram",
    ]


def test_summarize_edge_box():
    doc = capabilities.summarize("pi", 2, 2 * GIB, [], 5.0, has_edge=True)
    assert doc["worker_type"] == "edge"
    assert doc["has_edge"] is True
    assert doc["ram"] == "2GB"


@pytest.mark.parametrize(
    ("cores", "ram", "expected"),
    [
        (2, 4 * GIB - 1, "edge"),
        (2, 4 * GIB, "cpu"),  # exactly 4 GiB is no longer "small"
        (3, 1 * GIB, "cpu"),  # three cores is more than an edge board
        (1, 512 * MIB, "edge"),
    ],
)
def test_summarize_edge_thresholds(cores, ram, expected):
    assert capabilities.summarize("h", cores, ram, [], None)["worker_type"] == expected


def test_summarize_gpu_box():
    gpus = [EXPECTED_TWO_GPUS[0]]
    doc = capabilities.summarize("gpu1", 2, 2 * GIB, gpus, 3.14159)
    assert doc["has_gpu"] is True
    assert doc["gpu_type"] == "NVIDIA GeForce RTX 4090"
    assert doc["gpu_memory"] == "24576 MiB"
    # A GPU wins over the edge rule even on a small host.
    assert doc["worker_type"] == "gpu"
    assert doc["gpus"] == gpus
    assert doc["latency_ms"] == 3.14
    assert doc["low_latency"] is True


def test_summarize_uses_first_gpu():
    doc = capabilities.summarize("g", 32, 256 * GIB, list(reversed(EXPECTED_TWO_GPUS)), None)
    assert doc["gpu_type"] == "NVIDIA A100-SXM4-80GB"
    assert doc["gpu_memory"] == "81920 MiB"
    assert len(doc["gpus"]) == 2


@pytest.mark.parametrize(
    ("latency", "low", "rounded"),
    [
        (None, False, None),
        (0.0, True, 0.0),
        (19.994, True, 19.99),
        (19.999, True, 20.0),  # the threshold applies to the measured value, not the rounded one
        (20.0, False, 20.0),
        (150.456, False, 150.46),
    ],
)
def test_summarize_latency_threshold(latency, low, rounded):
    doc = capabilities.summarize("h", 8, 16 * GIB, [], latency)
    assert doc["low_latency"] is low
    assert doc["latency_ms"] == rounded


@pytest.mark.parametrize(
    ("ram_bytes", "text"),
    [
        (0, "0GB"),
        (GIB - 1, "0GB"),
        (GIB, "1GB"),
        (65843212 * 1024, "62GB"),  # a typical "64 GB" box as /proc/meminfo reports it
    ],
)
def test_summarize_ram_string_floors_gib(ram_bytes, text):
    doc = capabilities.summarize("h", 8, ram_bytes, [], None)
    assert doc["ram"] == text
    assert doc["ram_bytes"] == ram_bytes


# --- read_gpus -------------------------------------------------------------------------


def test_read_gpus_lists_each_device_and_shuts_down():
    nvml = FakeNVML(TWO_GPUS)
    assert capabilities.read_gpus(nvml) == EXPECTED_TWO_GPUS
    assert nvml.calls == ["init", "shutdown"]


def test_read_gpus_utilization_error_affects_only_that_field():
    nvml = FakeNVML(TWO_GPUS, util_error_for={1})
    gpus = capabilities.read_gpus(nvml)
    assert gpus[0]["utilization_percent"] == 37
    assert gpus[1] == {**EXPECTED_TWO_GPUS[1], "utilization_percent": None}
    assert nvml.calls[-1] == "shutdown"


def test_read_gpus_init_failure_returns_empty_without_shutdown(caplog):
    nvml = FakeNVML(TWO_GPUS, init_error=True)
    with caplog.at_level("DEBUG", logger=capabilities.__name__):
        assert capabilities.read_gpus(nvml) == []
    assert nvml.calls == ["init"]
    assert len(caplog.records) == 1
    assert caplog.records[0].levelname == "DEBUG"


def test_read_gpus_real_pynvml_without_gpu():
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver; the no-GPU path cannot be exercised")
    assert capabilities.read_gpus(pynvml) == []


# --- collect ---------------------------------------------------------------------------


def test_collect_with_fake_nvml():
    doc = capabilities.collect(None, nvml=FakeNVML(TWO_GPUS))
    assert doc["has_gpu"] is True
    assert doc["worker_type"] == "gpu"
    assert doc["gpus"] == EXPECTED_TWO_GPUS
    assert doc["hostname"] == socket.gethostname()
    assert doc["cpu_cores"] >= 1
    assert doc["ram_bytes"] > 0
    assert doc["latency_ms"] is None
    assert doc["low_latency"] is False


def test_collect_measures_latency_to_listening_peer():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        doc = capabilities.collect(f"127.0.0.1:{port}", nvml=FakeNVML())
    assert isinstance(doc["latency_ms"], float)
    assert doc["latency_ms"] >= 0.0
    assert doc["low_latency"] is True  # loopback is far below 20 ms
    assert doc["has_gpu"] is False


def test_collect_closed_port_gives_no_latency():
    # Bind without listening to hold a port nobody accepts on.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        doc = capabilities.collect(f"127.0.0.1:{port}", nvml=FakeNVML())
    assert doc["latency_ms"] is None
    assert doc["low_latency"] is False


@pytest.mark.parametrize("peer", ["no-port", "host:notaport", ""])
def test_measure_latency_rejects_malformed_peer(peer):
    assert capabilities.measure_latency_ms(peer) is None


def test_read_ram_bytes_parses_memtotal(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       65843212 kB\nMemFree:         1000 kB\n")
    assert capabilities.read_ram_bytes(str(meminfo)) == 65843212 * 1024


def test_read_ram_bytes_missing_file_is_zero(tmp_path):
    assert capabilities.read_ram_bytes(str(tmp_path / "absent")) == 0
