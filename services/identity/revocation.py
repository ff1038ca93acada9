"""Refusing a revoked node's TLS certificate: a CRL of the mesh TLS CA, for Envoy.

Why a CRL and not a list of worker ids: a name is free again once its holder is revoked
(`meshworker revoke a; meshworker join --name a` is allowed), so refusing by name either
locks out the new holder or, once the name is dropped from the list, lets the revoked
certificate back in. A CRL names certificates (issuer + serial), and Envoy checks it
itself, on the peer listener and on every mTLS upstream alike: the `crl` field of the
CertificateValidationContext (SDS secret `mesh-ca`), checked by BoringSSL during the
handshake. Envoy refuses every certificate of a CA whose CRL it is given but cannot
use, so the CRL is signed by the very CA of the bundle, and it never expires on its own:
rollback is prevented by the signed mesh record that carries it (higher serials only),
not by nextUpdate, so a CA holder that is offline does not stop the mesh.

Only an overlay can revoke: in secret mode every holder of the secret can mint any
node's certificate, and the remedy for a leaked secret is a new secret (a new mesh id).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from services.identity.mesh_ca import CLOCK_SKEW_S, MeshCa


def revocation_list(ca: MeshCa, revoked_serials: Iterable[int], number: int, now: float) -> bytes:
    """The CA's CRL (PEM) of the given certificate serials; `number` increases with each
    one issued (RFC 5280 5.2.3: the mesh record's serial is a fine choice)."""
    at = datetime.datetime.fromtimestamp(now, datetime.UTC)
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.certificate.subject)
               .last_update(at - datetime.timedelta(seconds=CLOCK_SKEW_S))
               .next_update(ca.certificate.not_valid_after_utc)
               .add_extension(x509.CRLNumber(number), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                              critical=False))
    for serial in sorted(set(revoked_serials)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(at).build())
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
