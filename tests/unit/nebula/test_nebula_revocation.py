"""`revoke` on the CA holder also revokes the node's mesh TLS certificate: the address
table keeps each certificate's serial, and the next mesh record carries the TLS CA's CRL
of every revoked one (nebula-cert stubbed: the table and the record are under test)."""

from __future__ import annotations

import time

from authority_fixture import fake_signer
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from services.identity import overlay
from services.identity.mesh_ca import serial_of
from services.nebula.authority import allocation, holder
from services.nebula.authority.holder import JoinRequest
from services.nebula.overlay import membership

PUB = "-----BEGIN NEBULA X25519 PUBLIC KEY-----\n" + "A" * 43 + "=\n-----END NEBULA X25519 PUBLIC KEY-----\n"
NOW = time.time()


def enroll(paths, name: str, tls: bool = True, lighthouse: bool = False) -> int | None:
    """Enroll `name` with a fresh TLS key; the serial of the TLS certificate it got."""
    key = overlay.public_key_pem(ec.generate_private_key(ec.SECP256R1())) if tls else None
    token = holder.issue_token(paths, 3600, 1, [], lighthouse, NOW)
    reply = holder.enroll(paths, JoinRequest(token=token, name=name, public_key=PUB, tls_public_key=key,
                                                lighthouse=lighthouse, advertise=("1.2.3.4:4242",) * lighthouse),
                             NOW, fake_signer)
    return serial_of(reply["tls_certificate"].encode()) if tls else None


def crl_of(paths) -> x509.CertificateRevocationList:
    record, _ = membership.load_record(paths, membership.load(paths))
    crl = x509.load_pem_x509_crl(record.tls_crl.encode())
    assert crl.is_signature_valid(x509.load_pem_x509_certificate(paths.mesh_tls_ca_crt.read_bytes()).public_key())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == record.serial
    return crl


def test_the_address_table_keeps_each_tls_serial(ca_paths):
    serial = enroll(ca_paths, "n2")
    table = allocation.load(ca_paths.allocations)

    assert {e["name"]: int(e["tls_serial"], 16) for e in table.values()} == {
        "lh": serial_of(ca_paths.node_tls_crt.read_bytes()), "n2": serial}


def test_revoke_names_exactly_the_revoked_nodes_in_the_records_crl(ca_paths):
    kept, first, second = (enroll(ca_paths, n) for n in ("n2", "n3", "n4"))
    record, _ = membership.load_record(ca_paths, membership.load(ca_paths))
    assert record.tls_crl == ""  # nothing revoked yet: no CRL

    holder.revoke(ca_paths, "n3", NOW)
    assert [r.serial_number for r in crl_of(ca_paths)] == [first]
    holder.revoke(ca_paths, "n4", NOW)
    assert sorted(r.serial_number for r in crl_of(ca_paths)) == sorted([first, second])
    assert crl_of(ca_paths).get_revoked_certificate_by_serial_number(kept) is None


def test_a_later_record_keeps_the_crl(ca_paths):
    enroll(ca_paths, "n2")
    _, updated = holder.revoke(ca_paths, "n2", NOW)
    enroll(ca_paths, "lh2", lighthouse=True)  # a new lighthouse makes the next record
    record, _ = membership.load_record(ca_paths, membership.load(ca_paths))

    assert record.serial == updated.serial + 1 and record.tls_crl == updated.tls_crl != ""


def test_a_node_without_a_tls_certificate_is_revoked_without_a_crl(ca_paths, caplog):
    enroll(ca_paths, "old", tls=False)
    _, record = holder.revoke(ca_paths, "old", NOW)

    assert record.tls_crl == "" and "fp-old" in record.blocklist
    assert "no CRL names it" in caplog.text


def test_a_mesh_made_before_its_tls_ca_still_revokes(ca_paths):
    enroll(ca_paths, "n2")
    ca_paths.mesh_tls_ca_key.unlink()
    _, record = holder.revoke(ca_paths, "n2", NOW)

    assert record.tls_crl == "" and "fp-n2" in record.blocklist
