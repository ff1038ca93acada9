"""Tests for services.identity.revocation: the mesh TLS CA's CRL (Envoy's use of it is in
test_envoy_tls)."""

from __future__ import annotations

from cryptography import x509

from services.identity.mesh_ca import secret_mode_ca
from services.identity.revocation import revocation_list

SECRET = "correct horse battery staple"
T0 = 1_800_000_000.0


def test_crl_names_exactly_the_revoked_serials_signed_by_the_ca():
    ca = secret_mode_ca(SECRET)
    crl = x509.load_pem_x509_crl(revocation_list(ca, [7, 3, 7], 5, T0))
    assert crl.is_signature_valid(ca.certificate.public_key())
    assert crl.issuer == ca.certificate.subject
    assert sorted(r.serial_number for r in crl) == [3, 7]
    assert crl.get_revoked_certificate_by_serial_number(4) is None
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 5


def test_crl_does_not_expire_before_its_ca():
    ca = secret_mode_ca(SECRET)
    crl = x509.load_pem_x509_crl(revocation_list(ca, [], 1, T0))
    assert len(crl) == 0
    assert crl.next_update_utc == ca.certificate.not_valid_after_utc
    assert crl.last_update_utc.timestamp() == T0 - 60


def test_another_mesh_cannot_sign_our_crl():
    ours, theirs = secret_mode_ca(SECRET), secret_mode_ca("a different mesh secret")
    crl = x509.load_pem_x509_crl(revocation_list(theirs, [1], 1, T0))
    assert not crl.is_signature_valid(ours.certificate.public_key())
