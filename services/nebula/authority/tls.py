"""The enrollment endpoint's self-signed X.509 certificate, and its SHA-256 pin.

Joiners cannot check this certificate against any public CA, and need not: the join
command carries the SHA-256 of its DER encoding (as kubeadm's join carries the CA hash),
and the joiner compares it before it sends a byte.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 3650


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names or [x509.DNSName("meshworker-enroll")])


def self_signed(common_name: str, hosts: list[str]) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for an ECDSA P-256 key, valid ten years."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(_san(hosts), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def pin_of_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def pin_of_pem(pem: bytes) -> str:
    return pin_of_der(x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER))
