"""Parsing Nebula keys and certificates, and translating nebula's stats (pure where possible)."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from services.nebula.agent import nebmetrics
from services.nebula.overlay import pki
from services.nebula.overlay.state import EnrollmentError

PUB = "-----BEGIN NEBULA X25519 PUBLIC KEY-----\n" + base64.b64encode(bytes(range(32))).decode() + \
      "\n-----END NEBULA X25519 PUBLIC KEY-----\n"


def test_a_nebula_public_key_is_accepted_and_normalised():
    assert pki.check_public_key(PUB.replace("\n", "\r\n")) == PUB


@pytest.mark.parametrize("text", [
    "", "not a key", PUB.replace("X25519 PUBLIC", "X25519 PRIVATE"),
    PUB.replace("X25519", "ED25519"),
    "-----BEGIN NEBULA X25519 PUBLIC KEY-----\nAAAA\n-----END NEBULA X25519 PUBLIC KEY-----\n",
    "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n",
    PUB + PUB,
])
def test_anything_else_is_not_a_nebula_public_key(text):
    with pytest.raises(EnrollmentError, match="not a Nebula public key") as err:
        pki.check_public_key(text)
    assert err.value.code == "bad_public_key"


def test_real_keygen_output_is_accepted(tmp_path):
    pki.keygen(tmp_path / "k.key", tmp_path / "k.pub")

    assert pki.check_public_key((tmp_path / "k.pub").read_text())
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600


def test_cert_info_from_nebula_cert_print(tmp_path):
    subprocess.run(["nebula-cert", "ca", "-name", "t", "-out-crt", str(tmp_path / "ca.crt"),
                    "-out-key", str(tmp_path / "ca.key")], check=True, timeout=20)
    info = pki.cert_info(tmp_path / "ca.crt")

    assert info.is_ca and info.name == "t" and len(info.fingerprint) == 64 and info.not_after > 0
    doc = json.loads(pki.run_nebula_cert("print", "-json", "-path", str(tmp_path / "ca.crt")))
    assert pki.cert_info_from_json(json.dumps(doc)) == info


EXPOSITION = """# TYPE nebula_hostmap_main_hosts gauge
nebula_hostmap_main_hosts 2
# TYPE nebula_firewall_incoming_dropped_no_rule gauge
nebula_firewall_incoming_dropped_no_rule 3
# TYPE nebula_firewall_incoming_dropped_local_ip gauge
nebula_firewall_incoming_dropped_local_ip 1
# TYPE nebula_handshakes gauge
nebula_handshakes{type="count"} 7
"""


def test_nebula_stats_become_meshworker_families():
    stats = nebmetrics.NebulaStats()
    stats.update(EXPOSITION)
    families = {f.name: f for f in stats.collect()}

    assert stats.tunnels() == 2
    assert families["meshworker_nebula_tunnels"].samples[0].value == 2
    dropped = families["meshworker_nebula_firewall_inbound_dropped_packets"]
    assert dropped.type == "counter" and dropped.samples[0].name.endswith("_total")
    assert dropped.samples[0].value == 4
    assert families["meshworker_nebula_stats_up"].samples[0].value == 1
    assert all(name.startswith("meshworker_") for name in families)


def test_no_stats_means_down_and_no_values():
    stats = nebmetrics.NebulaStats()
    stats.update(None)

    assert stats.tunnels() is None
    assert [f.name for f in stats.collect()] == ["meshworker_nebula_stats_up"]
