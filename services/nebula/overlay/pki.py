"""Nebula keys and certificates: parsing them (pure) and making them with `nebula-cert`.

Nebula's PEM blocks carry raw key bytes: "NEBULA X25519 PUBLIC KEY" (32 bytes, a host's
Diffie-Hellman key) and "NEBULA ED25519 PRIVATE KEY" (64 bytes, Go's seed || public key,
the CA's signing key). Certificates are read through `nebula-cert print -json`, whose
`fingerprint` is the value `pki.blocklist` takes (nebula config reference, "pki").
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from services.nebula.overlay.state import EnrollmentError, StateError

log = logging.getLogger(__name__)
NEBULA_CERT = "nebula-cert"
TIMEOUT_S = 20.0
X25519_PUBLIC = "NEBULA X25519 PUBLIC KEY"
ED25519_PRIVATE = "NEBULA ED25519 PRIVATE KEY"
_PEM = re.compile(r"\A-----BEGIN ([A-Z0-9 ]+)-----\n([A-Za-z0-9+/=\n]+)-----END \1-----\n?\Z")


def pem_body(text: str, kind: str, size: int) -> bytes:
    """The raw bytes of one PEM block of `kind` holding exactly `size` bytes; ValueError else."""
    match = _PEM.match(text.replace("\r\n", "\n").strip() + "\n")
    if not match or match.group(1) != kind:
        raise ValueError(f"expected one PEM block of type {kind!r}")
    try:
        raw = base64.b64decode(match.group(2).replace("\n", ""), validate=True)
    except binascii.Error:
        raise ValueError(f"the {kind} block is not valid base64") from None
    if len(raw) != size:
        raise ValueError(f"a {kind} holds {size} bytes, this one {len(raw)}")
    return raw


def check_public_key(text: str) -> str:
    """The joiner's public key, normalised; refused unless it is a Nebula X25519 public key."""
    try:
        raw = pem_body(text, X25519_PUBLIC, 32)
    except ValueError as err:
        raise EnrollmentError("bad_public_key", f"public_key is not a Nebula public key from "
                              f"`nebula-cert keygen`: {err}") from None
    encoded = base64.b64encode(raw).decode()
    return f"-----BEGIN {X25519_PUBLIC}-----\n{encoded}\n-----END {X25519_PUBLIC}-----\n"


@dataclass(frozen=True)
class CertInfo:
    name: str
    ips: tuple[str, ...]  # CIDR, e.g. "10.42.0.2/16"
    groups: tuple[str, ...]
    not_after: int  # unix seconds
    fingerprint: str
    issuer: str
    public_key: str  # hex
    is_ca: bool

    @property
    def overlay_ip(self) -> str:
        return self.ips[0].split("/")[0] if self.ips else ""


def cert_info_from_json(text: str) -> CertInfo:
    """Parse `nebula-cert print -json` output (pure)."""
    doc = json.loads(text)
    details = doc["details"]
    not_after = datetime.fromisoformat(details["notAfter"])
    return CertInfo(name=details["name"], ips=tuple(details.get("ips") or ()),
                    groups=tuple(details.get("groups") or ()), not_after=int(not_after.timestamp()),
                    fingerprint=doc["fingerprint"], issuer=details.get("issuer", ""),
                    public_key=details["publicKey"], is_ca=bool(details.get("isCa")))


def run_nebula_cert(*args: str) -> str:
    """Run nebula-cert with a timeout; RuntimeError carrying its own words on failure."""
    argv = [NEBULA_CERT, *args]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise RuntimeError("nebula-cert not found: install nebula (Debian: apt-get install nebula)") from None
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"nebula-cert {args[0]} did not finish within {TIMEOUT_S:.0f} s") from None
    if out.returncode != 0:
        raise RuntimeError(f"nebula-cert {args[0]} failed: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def cert_info(path: Path) -> CertInfo:
    """Details of the certificate at path; StateError when it is not a readable Nebula cert."""
    if not path.exists():
        raise StateError(f"certificate {path} is missing; restore it from a backup")
    try:
        return cert_info_from_json(run_nebula_cert("print", "-json", "-path", str(path)))
    except (RuntimeError, ValueError, KeyError) as err:
        raise StateError(f"certificate {path} is corrupt or unreadable ({err}); restore it "
                         "from a backup — meshworker never replaces it by itself") from None


def cert_info_of_pem(pem: str) -> CertInfo:
    with tempfile.TemporaryDirectory(prefix="mw-cert-") as tmp:
        path = Path(tmp) / "cert.crt"
        path.write_text(pem)
        return cert_info(path)


def make_ca(name: str, duration: str, crt: Path, key: Path) -> None:
    run_nebula_cert("ca", "-name", name, "-duration", duration, "-out-crt", str(crt), "-out-key", str(key))
    key.chmod(0o600)


def keygen(key: Path, pub: Path) -> None:
    run_nebula_cert("keygen", "-out-key", str(key), "-out-pub", str(pub))
    key.chmod(0o600)


def sign(ca_crt: Path, ca_key: Path, name: str, ip_cidr: str, groups: list[str], public_key_pem: str,
         out_crt: Path) -> None:
    """`nebula-cert sign -in-pub`: the private key never exists here, only its public half."""
    with tempfile.TemporaryDirectory(prefix="mw-sign-") as tmp:
        pub = Path(tmp) / "host.pub"
        pub.write_text(public_key_pem)
        run_nebula_cert("sign", "-ca-crt", str(ca_crt), "-ca-key", str(ca_key), "-name", name,
                        "-ip", ip_cidr, "-groups", ",".join(groups), "-in-pub", str(pub),
                        "-out-crt", str(out_crt))
