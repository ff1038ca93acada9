"""Tests for services.identity.overlay: the CA holder's mesh TLS CA and the credentials a
joined node reads back (enrollment itself is tested in tests/unit/nebula)."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from services.common.statefile import StateError
from services.identity.mesh_ca import (
    issue_node_certificate,
    load_or_create_node_key,
    secret_mode_credentials,
    serial_of,
)
from services.identity.overlay import (
    NODE_CERT_FILE,
    TLS_CA_CERT_FILE,
    ca_key_pem,
    check_node_certificate,
    load_mesh_ca,
    new_mesh_ca,
    overlay_mode_credentials,
    parse_public_key,
    public_key_pem,
)
from services.identity.revocation import revocation_list
from services.identity.trust import OVERLAY_DIR, RECORD_FILE

T0 = 1_800_000_000.0


def test_each_overlay_gets_its_own_ca():
    first, second = new_mesh_ca(), new_mesh_ca()
    assert first.mesh_id != second.mesh_id


def test_the_ca_holder_reads_its_ca_back():
    ca = new_mesh_ca()
    loaded = load_mesh_ca(ca.certificate_pem, ca_key_pem(ca))
    assert loaded.certificate == ca.certificate and loaded.mesh_id == ca.mesh_id
    with pytest.raises(ValueError, match="does not belong"):
        load_mesh_ca(ca.certificate_pem, ca_key_pem(new_mesh_ca()))


def test_a_joiners_public_key_round_trips():
    key = ec.generate_private_key(ec.SECP256R1())
    assert parse_public_key(public_key_pem(key)) == key.public_key()


@pytest.mark.parametrize("pem", [
    "garbage",
    ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
    ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
])
def test_other_public_keys_are_refused(pem):
    with pytest.raises(ValueError, match="not a"):
        parse_public_key(pem)


def test_the_joiner_checks_its_certificate():
    ca, key = new_mesh_ca(), ec.generate_private_key(ec.SECP256R1())
    cert = issue_node_certificate(ca, key.public_key(), "n2", T0)
    check_node_certificate(ca.certificate_pem, cert, key.public_key(), "n2")
    with pytest.raises(ValueError, match="not issued by"):
        check_node_certificate(new_mesh_ca().certificate_pem, cert, key.public_key(), "n2")
    with pytest.raises(ValueError, match="not for this node"):
        check_node_certificate(ca.certificate_pem, cert, ec.generate_private_key(ec.SECP256R1()).public_key(), "n2")
    with pytest.raises(ValueError, match="not for this node"):
        check_node_certificate(ca.certificate_pem, cert, key.public_key(), "n3")


def write_overlay(state, ca_pem: bytes, cert_pem: bytes) -> None:
    (state / OVERLAY_DIR).mkdir(parents=True)
    (state / OVERLAY_DIR / TLS_CA_CERT_FILE).write_bytes(ca_pem)
    (state / OVERLAY_DIR / NODE_CERT_FILE).write_bytes(cert_pem)


def test_no_overlay_certificate_no_credentials(tmp_path):
    assert overlay_mode_credentials(tmp_path) is None


def test_overlay_credentials_from_the_stored_files(tmp_path):
    ca = new_mesh_ca()
    cert = issue_node_certificate(ca, load_or_create_node_key(tmp_path).public_key(), "n2", T0, 3600)
    write_overlay(tmp_path, ca.certificate_pem, cert)
    creds = overlay_mode_credentials(tmp_path)
    assert creds.trusted_ca_pem == ca.certificate_pem and creds.certificate_chain_pem == cert
    assert creds.spiffe_id == f"spiffe://meshworker/{ca.mesh_id}/node/n2" and creds.mesh_id == ca.mesh_id
    assert creds.not_after == T0 + 3600


def test_a_certificate_for_another_key_is_a_state_error(tmp_path):
    ca = new_mesh_ca()
    cert = issue_node_certificate(ca, ec.generate_private_key(ec.SECP256R1()).public_key(), "n2", T0)
    write_overlay(tmp_path, ca.certificate_pem, cert)
    with pytest.raises(StateError, match=NODE_CERT_FILE):
        overlay_mode_credentials(tmp_path)


def write_record(state, body: dict) -> None:
    """record.json as nebula-agent keeps it (it checks the signature before it writes; this
    module reads only the body)."""
    signed = {"body": json.dumps(body), "signature": "00"}
    (state / OVERLAY_DIR / RECORD_FILE).write_text(json.dumps({"version": 1, "signed": signed}))


def member_of(tmp_path, ca) -> bytes:
    cert = issue_node_certificate(ca, load_or_create_node_key(tmp_path).public_key(), "n2", T0, 3600)
    write_overlay(tmp_path, ca.certificate_pem, cert)
    return cert


def test_overlay_credentials_carry_the_crl_of_the_members_record(tmp_path):
    ca = new_mesh_ca()
    member_of(tmp_path, ca)
    revoked = issue_node_certificate(ca, load_or_create_node_key(tmp_path / "n3").public_key(), "n3", T0)
    crl = revocation_list(ca, [serial_of(revoked)], 2, T0)
    write_record(tmp_path, {"serial": 2, "blocklist": [], "tls_crl": crl.decode()})
    assert overlay_mode_credentials(tmp_path).revocation_list_pem == crl


@pytest.mark.parametrize("body", [None, {"serial": 1, "blocklist": []}, {"serial": 1, "tls_crl": ""}])
def test_a_record_without_a_crl_gives_none(tmp_path, body):
    """No record.json yet, or one of a CA holder that revoked nothing (or cannot revoke TLS)."""
    member_of(tmp_path, new_mesh_ca())
    if body is not None:
        write_record(tmp_path, body)
    assert overlay_mode_credentials(tmp_path).revocation_list_pem == b""


def test_secret_mode_has_no_crl(tmp_path):
    assert secret_mode_credentials("a mesh secret of this test", tmp_path, "n2", T0).revocation_list_pem == b""


@pytest.mark.parametrize("crl", ["garbage", 5, "another CA's"])
def test_a_crl_envoy_could_not_use_is_a_state_error(tmp_path, crl):
    """Envoy would refuse every peer of a CA whose CRL it cannot use: say so instead."""
    member_of(tmp_path, new_mesh_ca())
    if crl == "another CA's":
        crl = revocation_list(new_mesh_ca(), [1], 1, T0).decode()
    write_record(tmp_path, {"serial": 1, "tls_crl": crl})
    with pytest.raises(StateError, match=RECORD_FILE):
        overlay_mode_credentials(tmp_path)


def test_an_unreadable_record_is_a_state_error(tmp_path):
    member_of(tmp_path, new_mesh_ca())
    (tmp_path / OVERLAY_DIR / RECORD_FILE).write_text("{")
    with pytest.raises(StateError, match=f"{RECORD_FILE} is unusable"):
        overlay_mode_credentials(tmp_path)
