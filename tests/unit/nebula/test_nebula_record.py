"""The CA-signed mesh record that carries the blocklist and the lighthouses (pure)."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from services.identity.proofs import MESH_RECORD_CONTEXT
from services.nebula.overlay import records
from services.nebula.overlay.records import MeshRecord, RecordError


def nebula_ca_key() -> tuple[str, str]:
    """A CA key as nebula-cert writes it (seed || public), and the public key in hex."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    body = base64.b64encode(seed + public).decode()
    pem = f"-----BEGIN NEBULA ED25519 PRIVATE KEY-----\n{body[:64]}\n{body[64:]}\n-----END NEBULA ED25519 PRIVATE KEY-----\n"
    return pem, public.hex()


CA_KEY, CA_PUB = nebula_ca_key()
RECORD = MeshRecord(serial=3, issued_at=100, ca_fingerprint="fp", lighthouses={"10.42.0.1": ["1.2.3.4:4242"]},
                    blocklist=("bb", "aa"))


def test_signed_record_verifies_against_the_ca():
    assert records.verify(records.sign(RECORD, CA_KEY), CA_PUB, "fp") == MeshRecord(
        serial=3, issued_at=100, ca_fingerprint="fp", lighthouses={"10.42.0.1": ["1.2.3.4:4242"]},
        blocklist=("aa", "bb"))


def test_a_tampered_blocklist_is_refused():
    signed = records.sign(RECORD, CA_KEY)
    signed["body"] = signed["body"].replace('"aa",', "")

    with pytest.raises(RecordError, match="not signed"):
        records.verify(signed, CA_PUB, "fp")


def test_another_ca_is_refused():
    other_key, _other_pub = nebula_ca_key()

    with pytest.raises(RecordError, match="not signed"):
        records.verify(records.sign(RECORD, other_key), CA_PUB, "fp")
    with pytest.raises(RecordError, match="another CA"):
        records.verify(records.sign(RECORD, CA_KEY), CA_PUB, "other-fp")


@pytest.mark.parametrize("signed", [None, {}, {"body": "{}", "signature": "zz"}, "text"])
def test_malformed_records_are_refused(signed):
    with pytest.raises(RecordError):
        records.verify(signed, CA_PUB, "fp")


def test_only_a_higher_serial_replaces_a_record():
    newer = RECORD.next(200, blocklist=("cc",))

    assert newer.serial == 4 and records.newer(newer, RECORD)
    assert not records.newer(RECORD, newer)
    assert not records.newer(RECORD, RECORD)
    assert records.newer(RECORD, None)


def test_the_signature_covers_the_tls_revocation_list():
    signed = records.sign(RECORD.next(200, tls_crl="-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"), CA_KEY)

    assert records.verify(signed, CA_PUB, "fp").tls_crl.startswith("-----BEGIN X509 CRL-----")
    signed["body"] = signed["body"].replace("AAAA", "AAAB")
    with pytest.raises(RecordError, match="not signed"):
        records.verify(signed, CA_PUB, "fp")


def test_a_record_of_a_ca_holder_without_tls_revocation_reads_as_no_crl():
    """Records signed before the field existed (or by an older CA holder) have no tls_crl."""
    body = json.loads(RECORD.body())
    del body["tls_crl"]
    text = json.dumps(body)
    signed = {"body": text, "signature": records.ca_signing_key(CA_KEY).sign(MESH_RECORD_CONTEXT + text.encode()).hex()}

    record = records.verify(signed, CA_PUB, "fp")
    assert (record.serial, record.blocklist, record.tls_crl) == (3, ("aa", "bb"), "")
