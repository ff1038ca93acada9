"""Overlay mode: the CA holder keeps a random mesh TLS CA and certifies each node's TLS key.

`meshworker init` makes the CA (its key stays in <state>/nebula/authority/, its certificate
goes to every member); `join` sends the node's TLS public key with the enrollment request,
and the reply carries the node's certificate and the CA certificate, both stored in the
joiner's <state>/nebula/. The private key never leaves the node (as with Nebula's keys).
The node certificate lives as long as the Nebula certificate it was issued with: the
router cannot renew it alone, and revocation goes through the CA's CRL (revocation.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.common.identity import OVERLAY_DIR
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

    @classmethod
    def of(cls, state_dir: Path) -> OverlayFiles:
        root = Path(state_dir) / OVERLAY_DIR
        return cls(root / TLS_CA_CERT_FILE, root / NODE_CERT_FILE)


def overlay_mode_credentials(state_dir: Path) -> TlsCredentials | None:
    """This node's TLS credentials as the overlay's CA holder issued them; None when it holds
    none (no overlay, or enrolled by a meshworker that issued no TLS certificate)."""
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
    return credentials(x509.load_pem_x509_certificate(ca_pem), key, cert_pem)
