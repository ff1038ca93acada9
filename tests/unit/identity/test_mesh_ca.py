"""Tests for services.identity.mesh_ca: the secret-derived mesh CA, node keys and certificates."""

from __future__ import annotations

import datetime
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification

from services.common.statefile import StateError
from services.identity import mesh_ca
from services.identity.mesh_ca import (
    NODE_KEY_FILE,
    issue_node_certificate,
    load_or_create_node_key,
    needs_renewal,
    secret_mode_ca,
    secret_mode_credentials,
    spiffe_id,
    worker_of,
)

SECRET = "correct horse battery staple"
OTHER_SECRET = "another mesh, another secret"
T0 = 1_800_000_000.0
DAY = 24 * 3600


def at(t: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(t, datetime.UTC)


def client_verifier(ca: x509.Certificate, t: float) -> verification.ClientVerifier:
    store = verification.Store([ca])
    return verification.PolicyBuilder().store(store).time(at(t)).build_client_verifier()


def leaf_for(ca: mesh_ca.MeshCa, worker: str = "node-1", t: float = T0) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return x509.load_pem_x509_certificate(issue_node_certificate(ca, key.public_key(), worker, t))


def test_same_secret_same_ca_bytes_and_mesh_id():
    first, second = secret_mode_ca(SECRET), secret_mode_ca(SECRET)
    assert first.certificate_pem == second.certificate_pem
    assert first.mesh_id == second.mesh_id
    assert len(first.mesh_id) == 16 and int(first.mesh_id, 16) >= 0


def test_other_secret_other_ca():
    ours, theirs = secret_mode_ca(SECRET), secret_mode_ca(OTHER_SECRET)
    assert ours.certificate_pem != theirs.certificate_pem
    assert ours.mesh_id != theirs.mesh_id


def test_ca_certificate_is_a_ca_named_after_its_mesh():
    ca = secret_mode_ca(SECRET)
    cert = ca.certificate
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ca.mesh_id in cert.subject.rfc4514_string()
    assert cert.not_valid_before_utc.year == 2020 and cert.not_valid_after_utc.year == 2120


def test_short_secret_is_refused():
    with pytest.raises(ValueError, match="at least 16"):
        secret_mode_ca("short")


def test_leaf_verifies_against_its_ca_as_client_and_server():
    ca = secret_mode_ca(SECRET)
    leaf = leaf_for(ca)
    client = client_verifier(ca.certificate, T0)
    verified = client.verify(leaf, [])
    uris = [n.value for n in verified.subjects or [] if isinstance(n, x509.UniformResourceIdentifier)]
    assert uris == [f"spiffe://meshworker/{ca.mesh_id}/node/node-1"]
    server = (verification.PolicyBuilder().store(verification.Store([ca.certificate])).time(at(T0))
              .build_server_verifier(x509.DNSName("node-1")))
    assert server.verify(leaf, [])[0] == leaf


def test_leaf_of_another_mesh_does_not_verify_against_ours():
    ours, theirs = secret_mode_ca(SECRET), secret_mode_ca(OTHER_SECRET)
    with pytest.raises(verification.VerificationError):
        client_verifier(ours.certificate, T0).verify(leaf_for(theirs), [])


def test_leaf_is_short_lived_and_tolerates_a_minute_of_skew():
    leaf = leaf_for(secret_mode_ca(SECRET))
    assert leaf.not_valid_before_utc == at(T0 - 60)
    assert leaf.not_valid_after_utc == at(T0 + DAY)
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    with pytest.raises(verification.VerificationError):
        client_verifier(secret_mode_ca(SECRET).certificate, T0 + DAY + 1).verify(leaf, [])


def test_leaf_serials_are_random():
    ca = secret_mode_ca(SECRET)
    assert leaf_for(ca).serial_number != leaf_for(ca).serial_number


def test_san_round_trips_through_pem_and_uri():
    ca = secret_mode_ca(SECRET)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = issue_node_certificate(ca, key.public_key(), "gpu-box.lab_2", T0)
    assert worker_of(pem) == "gpu-box.lab_2"
    assert worker_of(spiffe_id(ca.mesh_id, "gpu-box.lab_2")) == "gpu-box.lab_2"
    san = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == []  # '.' and '_' make it no DNS label


def test_dns_san_only_for_a_dns_label():
    leaf = leaf_for(secret_mode_ca(SECRET), "worker-7")
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["worker-7"]


@pytest.mark.parametrize("uri", ["spiffe://meshworker/0123456789abcdef/svc/x", "spiffe://other/0123456789abcdef/node/x",
                                 "https://meshworker/0123456789abcdef/node/x", "not a uri"])
def test_worker_of_refuses_what_is_no_node_id(uri):
    assert worker_of(uri) is None


def test_worker_of_a_certificate_without_our_san():
    assert worker_of(secret_mode_ca(SECRET).certificate_pem) is None


@pytest.mark.parametrize("worker", ["", "..", "a/b", "-x", "x" * 64, "é"])
def test_bad_worker_ids_are_refused(worker):
    with pytest.raises(ValueError, match="worker id"):
        spiffe_id("0123456789abcdef", worker)


def test_node_key_is_private_and_reused(tmp_path):
    first = load_or_create_node_key(tmp_path / "state")
    path = tmp_path / "state" / NODE_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert isinstance(first.curve, ec.SECP256R1)
    assert load_or_create_node_key(tmp_path / "state").private_numbers() == first.private_numbers()


def test_unusable_node_key_is_never_replaced(tmp_path):
    (tmp_path / NODE_KEY_FILE).write_bytes(b"garbage")
    with pytest.raises(StateError, match=NODE_KEY_FILE):
        load_or_create_node_key(tmp_path)
    assert (tmp_path / NODE_KEY_FILE).read_bytes() == b"garbage"


def test_renewal_after_half_the_lifetime():
    pem = issue_node_certificate(secret_mode_ca(SECRET), ec.generate_private_key(ec.SECP256R1()).public_key(),
                                 "n", T0, lifetime_s=1000)
    half = (T0 - 60 + T0 + 1000) / 2
    assert not needs_renewal(pem, T0)
    assert not needs_renewal(pem, half - 1)
    assert needs_renewal(pem, half)
    assert needs_renewal(pem, T0 + 5000)


def test_secret_mode_credentials_fit_together(tmp_path):
    creds = secret_mode_credentials(SECRET, tmp_path, "node-1", T0)
    ca = secret_mode_ca(SECRET)
    assert creds.trusted_ca_pem == ca.certificate_pem and creds.mesh_id == ca.mesh_id
    assert creds.spiffe_id == f"spiffe://meshworker/{ca.mesh_id}/node/node-1"
    assert creds.not_after == T0 + DAY
    leaf = x509.load_pem_x509_certificate(creds.certificate_chain_pem)
    client_verifier(ca.certificate, T0).verify(leaf, [])
    assert leaf.public_key() == load_or_create_node_key(tmp_path).public_key()
    assert creds.private_key_pem == (tmp_path / NODE_KEY_FILE).read_bytes()
