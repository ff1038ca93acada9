"""Overlay mode: the CA holder keeps a random mesh TLS CA and certifies each node's TLS key.

`meshworker init` makes the CA (its key stays in <state>/nebula/authority/, its certificate
goes to every member); `join` sends the node's TLS public key with the enrollment request,
and the reply carries the node's certificate and the CA certificate, both stored in the
joiner's <state>/nebula/. The private key never leaves the node (as with Nebula's keys).
The node certificate lives as long as the Nebula certificate it was issued with: the
router cannot renew it alone, and revocation goes through the CA's CRL (revocation.py):
`meshworker revoke` puts it in the CA-signed mesh record (`tls_crl`), which every member
polls from the CA holder and keeps in <state>/nebula/record.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.common.statefile import StateError
from services.identity.mesh_ca import (
    MeshCa,
    TlsCredentials,
    ca_certificate,
    credentials,
    key_pem,
    load_or_create_node_key,
    worker_of,
)
from services.identity.trust import OVERLAY_DIR, RECORD_FILE

# In <state>/nebula/ (services/nebula's NebulaPaths names the same files).
TLS_CA_CERT_FILE = "mesh-tls-ca.crt"  # every member
TLS_CA_KEY_FILE = "mesh-tls-ca.key"  # the CA holder only, under authority/
NODE_CERT_FILE = "node-tls.crt"  # this node's certificate, issued by the CA holder


def new_mesh_ca() -> MeshCa:
    """A fresh random CA for a new overlay (its certificate is made as in secret mode)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return MeshCa(key, ca_certificate(key))


def load_mesh_ca(cert_pem: bytes, key_pem_bytes: bytes) -> MeshCa:
    """The CA holder's CA from its files; ValueError unless the key is the certificate's."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem_bytes, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise ValueError("the mesh TLS CA key does not belong to its certificate")
    return MeshCa(key, cert)


def ca_key_pem(ca: MeshCa) -> bytes:
    return key_pem(ca.key)


def public_key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    """What a joiner sends: its TLS key's SubjectPublicKeyInfo, PEM."""
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def parse_public_key(pem: str) -> ec.EllipticCurvePublicKey:
    """A joiner's TLS public key; ValueError unless it is one P-256 key in PEM."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, AttributeError):
        raise ValueError("not a PEM public key") from None
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError("not an ECDSA P-256 public key")


def check_node_certificate(ca_pem: bytes, cert_pem: bytes, public_key: ec.EllipticCurvePublicKey,
                           worker_id: str) -> None:
    """What a joiner checks of its reply: the certificate is this CA's, for this key and name."""
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as err:
        raise ValueError(f"the node certificate is not issued by the mesh TLS CA ({err})") from None
    if cert.public_key() != public_key or worker_of(cert_pem) != worker_id:
        raise ValueError(f"the node certificate is not for this node's TLS key and name {worker_id!r}")


@dataclass(frozen=True)
class OverlayFiles:
    ca: Path
    cert: Path
    record: Path

    @classmethod
    def of(cls, state_dir: Path) -> OverlayFiles:
        root = Path(state_dir) / OVERLAY_DIR
        return cls(root / TLS_CA_CERT_FILE, root / NODE_CERT_FILE, root / RECORD_FILE)


def revocation_list_of(record_path: Path, ca: x509.Certificate) -> bytes:
    """The CA's CRL (PEM) from this member's mesh record, b"" when it carries none.

    nebula-agent writes the record only after checking the CA holder's signature and that
    its serial is newer, so the file is trusted as the certificates beside it are; the CRL
    is checked against the TLS CA all the same, because Envoy refuses every peer when its
    CRL is not the CA's (a StateError here is louder than a mesh that talks to no one).
    """
    try:
        body = json.loads(json.loads(record_path.read_text())["signed"]["body"])
        pem = body.get("tls_crl", "")  # absent in records of a CA holder that cannot revoke TLS
        if not isinstance(pem, str):
            raise TypeError("tls_crl is not a string")
    except FileNotFoundError:
        return b""
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise StateError(f"mesh record {record_path} is unusable ({err}); nebula-agent replaces it with "
                         "the CA holder's next record, or copy it from another member") from None
    if not pem:
        return b""
    try:
        signed = x509.load_pem_x509_crl(pem.encode()).is_signature_valid(ca.public_key())
    except ValueError:
        signed = False
    if not signed:
        raise StateError(f"the TLS revocation list in {record_path} is not signed by the mesh TLS CA")
    return pem.encode()


def overlay_mode_credentials(state_dir: Path) -> TlsCredentials | None:
    """This node's TLS credentials as the overlay's CA holder issued them, with the CA's
    latest CRL; None when it holds none (no overlay, or enrolled by a meshworker that issued
    no TLS certificate)."""
    files = OverlayFiles.of(state_dir)
    try:
        ca_pem, cert_pem = files.ca.read_bytes(), files.cert.read_bytes()
    except FileNotFoundError:
        return None
    key = load_or_create_node_key(state_dir)
    try:
        check_node_certificate(ca_pem, cert_pem, key.public_key(), worker_of(cert_pem) or "")
    except ValueError as err:
        raise StateError(f"{files.cert} does not fit {files.ca} and this node's TLS key: {err}") from None
    ca = x509.load_pem_x509_certificate(ca_pem)
    return credentials(ca, key, cert_pem, revocation_list_of(files.record, ca))
