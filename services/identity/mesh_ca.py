"""The mesh's TLS CA and the node certificates Envoy presents to peers (mutual TLS).

Certificates name a node SPIFFE-style, `spiffe://meshworker/<mesh id>/node/<worker id>`
(SPIFFE X.509-SVID: one URI SAN), so Envoy checks peers with a URI prefix match
(match_typed_subject_alt_names) and no code of ours. The mesh id is derived from the CA's
public key, so two meshes never share one.

Secret mode: the CA key is derived from the mesh secret (HKDF, RFC 5869), and the CA
certificate is made deterministically (fixed name, serial and validity, RFC 6979 ECDSA
signatures), so every holder of the secret builds the very same trust bundle and can
issue itself a certificate; nothing is exchanged. Anyone with the secret can then mint
any node's certificate: the secret is the trust, as it was for the HMAC proofs.
Node certificates live a day and are re-issued on start and at half their life.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.common.statefile import StateError, create_once

NODE_KEY_FILE = "node-tls.key"
DEFAULT_LIFETIME_S = 24 * 3600
CLOCK_SKEW_S = 60  # a peer whose clock runs a minute behind still accepts a fresh certificate
SPIFFE_TRUST_DOMAIN = "spiffe://meshworker/"
MIN_SECRET_CHARS = 16  # as services.common.config requires of mesh_secret
_HKDF_SALT = b"meshworker/v1/mesh-tls-ca/salt"
_HKDF_INFO = b"meshworker/v1/mesh-tls-ca: ECDSA P-256 private key of the mesh CA"
# P-256's group order n; a scalar is taken mod n-1, plus 1, from 64 bits more than n has,
# so its bias is negligible (FIPS 186-5 A.2.1, "extra random bits").
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_CA_NOT_BEFORE = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
_CA_NOT_AFTER = datetime.datetime(2120, 1, 1, tzinfo=datetime.UTC)
# A SPIFFE path segment (letters, digits, '.', '-', '_'; not '.' or '..'), as long as a host name.
_WORKER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_DNS_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_SPIFFE_NODE = re.compile(r"^spiffe://meshworker/([0-9a-f]{16})/node/([A-Za-z0-9][A-Za-z0-9._-]{0,62})$")


@dataclass(frozen=True)
class MeshCa:
    """A mesh TLS CA: its key and self-signed certificate (secret mode derives both)."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def mesh_id(self) -> str:
        return mesh_id_of(self.certificate.public_key())

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class TlsCredentials:
    """What Envoy needs for the peer listener and the remote clusters (SDS `node-cert` and
    `mesh-ca`, the CRL being `mesh-ca`'s `crl`).

    `revocation_list_pem` is the mesh CA's CRL (services/identity/revocation.py), empty when
    there is none. Only an overlay has one: in secret mode anyone with the secret can mint
    any node's certificate, so a CRL would stop nothing; revocation there is a new secret.
    """

    certificate_chain_pem: bytes
    private_key_pem: bytes
    trusted_ca_pem: bytes
    mesh_id: str
    spiffe_id: str
    not_after: float  # unix seconds
    revocation_list_pem: bytes = b""


def _spki_der(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def mesh_id_of(ca_public_key: ec.EllipticCurvePublicKey) -> str:
    """16 hex digits of SHA-256 of the CA's SubjectPublicKeyInfo: short, stable, per mesh."""
    return hashlib.sha256(_spki_der(ca_public_key)).hexdigest()[:16]


def derive_ca_key(secret: str) -> ec.EllipticCurvePrivateKey:
    """The mesh CA's P-256 key from the mesh secret: same secret, same key, on every node."""
    if not isinstance(secret, str) or len(secret) < MIN_SECRET_CHARS:
        raise ValueError(f"the mesh secret must be a string of at least {MIN_SECRET_CHARS} characters")
    okm = HKDF(algorithm=hashes.SHA256(), length=40, salt=_HKDF_SALT, info=_HKDF_INFO).derive(secret.encode())
    scalar = int.from_bytes(okm, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """The CA's self-signed certificate, a function of the key alone (byte for byte)."""
    public = key.public_key()
    mesh_id = mesh_id_of(public)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshworker"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"meshworker mesh CA {mesh_id}")])
    serial = int.from_bytes(hashlib.sha256(b"serial" + _spki_der(public)).digest()[:16], "big") | 1
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
            .serial_number(serial).not_valid_before(_CA_NOT_BEFORE).not_valid_after(_CA_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=True, crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256(), ecdsa_deterministic=True))


def secret_mode_ca(secret: str) -> MeshCa:
    key = derive_ca_key(secret)
    return MeshCa(key, ca_certificate(key))


def spiffe_id(mesh_id: str, worker_id: str) -> str:
    """`spiffe://meshworker/<mesh id>/node/<worker id>`; ValueError for an id that is not a
    SPIFFE path segment (then the worker id must be changed, never escaped into another)."""
    if not re.fullmatch(r"[0-9a-f]{16}", mesh_id):
        raise ValueError(f"mesh id {mesh_id!r} is not 16 lowercase hex digits")
    if not _WORKER_ID.match(worker_id) or worker_id in (".", ".."):
        raise ValueError(f"worker id {worker_id!r} cannot name a node certificate: use letters, digits, "
                         "'.', '-', '_' (at most 63, starting with a letter or digit)")
    return f"{SPIFFE_TRUST_DOMAIN}{mesh_id}/node/{worker_id}"


def spiffe_prefix(mesh_id: str) -> str:
    """What every node certificate of this mesh starts with (Envoy's SAN prefix match)."""
    return f"{SPIFFE_TRUST_DOMAIN}{mesh_id}/node/"


def worker_of(cert_pem_or_uri: bytes | str) -> str | None:
    """The worker id a node certificate (PEM) or SPIFFE id names; None if it names none."""
    if isinstance(cert_pem_or_uri, bytes):
        uri = _uri_of(cert_pem_or_uri)
        return worker_of(uri) if uri is not None else None
    match = _SPIFFE_NODE.match(cert_pem_or_uri)
    return match.group(2) if match else None


def _uri_of(cert_pem: bytes) -> str | None:
    """The certificate's one URI SAN (an X.509-SVID has exactly one)."""
    try:
        san = x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if len(uris) == 1 else None


def _leaf_san(uri: str, worker_id: str) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    if _DNS_LABEL.match(worker_id):
        names.append(x509.DNSName(worker_id))
    return x509.SubjectAlternativeName(names)


def issue_node_certificate(ca: MeshCa, node_public_key: ec.EllipticCurvePublicKey, worker_id: str,
                           now: float, lifetime_s: float = DEFAULT_LIFETIME_S) -> bytes:
    """A node's certificate (PEM), for serving and for connecting (serverAuth+clientAuth),
    valid until now + lifetime_s (to the nearest second: X.509 has no finer)."""
    uri = spiffe_id(ca.mesh_id, worker_id)
    start = datetime.datetime.fromtimestamp(now - CLOCK_SKEW_S, datetime.UTC)
    end = datetime.datetime.fromtimestamp(round(now + lifetime_s), datetime.UTC)
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, worker_id)]))
            .issuer_name(ca.certificate.subject).public_key(node_public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=False, crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(_leaf_san(uri, worker_id), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(node_public_key), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def serial_of(cert_pem: bytes) -> int:
    """A certificate's serial number: what a CRL names it by."""
    return x509.load_pem_x509_certificate(cert_pem).serial_number


def needs_renewal(cert_pem: bytes, now: float) -> bool:
    """Past half its lifetime (or expired): renewing early leaves half a lifetime of slack
    for a CA or router that is down when the time comes."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    start, end = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
    return now >= start + (end - start) / 2


def load_or_create_node_key(state_dir: Path) -> ec.EllipticCurvePrivateKey:
    """This node's TLS key (<state>/node-tls.key, PEM, 0600), made once and never replaced:
    the router and `meshworker` commands may both start first, and read back one key."""
    path = Path(state_dir) / NODE_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        create_once(path, key_pem(ec.generate_private_key(ec.SECP256R1())))
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError:
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise StateError(f"{path} is not an unencrypted ECDSA P-256 key in PEM; move it away to make a new one")
    return key


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def credentials(ca: x509.Certificate, key: ec.EllipticCurvePrivateKey, cert_pem: bytes,
                revocation_list_pem: bytes = b"") -> TlsCredentials:
    """Envoy's inputs from a CA certificate, this node's key, its certificate by that CA and
    the CA's CRL (none in secret mode)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return TlsCredentials(certificate_chain_pem=cert_pem, private_key_pem=key_pem(key),
                          trusted_ca_pem=ca.public_bytes(serialization.Encoding.PEM),
                          mesh_id=mesh_id_of(ca.public_key()), spiffe_id=_uri_of(cert_pem) or "",
                          not_after=cert.not_valid_after_utc.timestamp(), revocation_list_pem=revocation_list_pem)


def secret_mode_credentials(secret: str, state_dir: Path, worker_id: str, now: float,
                            lifetime_s: int = DEFAULT_LIFETIME_S) -> TlsCredentials:
    """Derive the CA, load (or make) this node's key, issue it a fresh certificate; no CRL
    (anyone with the secret can mint any certificate: a leaked secret needs a new secret)."""
    ca = secret_mode_ca(secret)
    key = load_or_create_node_key(state_dir)
    leaf = issue_node_certificate(ca, key.public_key(), worker_id, now, lifetime_s)
    return credentials(ca.certificate, key, leaf)
