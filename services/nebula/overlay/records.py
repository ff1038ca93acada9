"""The mesh record: lighthouses, blocklist, the TLS CA's CRL and sync interval, signed with
the CA's own key.

Only the CA holder can issue a record, and every member can check one against the CA
certificate it already has, so a record may travel over any channel and be relayed by
anyone. A member takes a record only when its serial is higher than the one it has
(no rollback to an older blocklist or CRL). Pure functions.

The CA key is Nebula's ed25519 key (seed || public key); the signature is plain Ed25519
over the exact body bytes, so nothing depends on how JSON is re-serialised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.identity.proofs import MESH_RECORD_CONTEXT
from services.nebula.overlay.pki import ED25519_PRIVATE, pem_body

DEFAULT_SYNC_INTERVAL_S = 30
# Domain separation: this key signs nebula certs and node-key proofs too. services.common.
# identity checks records (their blocklist) with the same context.
_CONTEXT = MESH_RECORD_CONTEXT


class RecordError(ValueError):
    """A record that is malformed, not signed by our CA, or older than the one we have."""


@dataclass(frozen=True)
class MeshRecord:
    serial: int
    issued_at: int
    ca_fingerprint: str
    sync_interval_s: int = DEFAULT_SYNC_INTERVAL_S
    lighthouses: dict[str, list[str]] = field(default_factory=dict)  # overlay ip -> ["host:port"]
    blocklist: tuple[str, ...] = ()  # nebula cert fingerprints
    # The mesh TLS CA's CRL (PEM) of revoked nodes' TLS certificates, for Envoy; "" for none.
    # Older members ignore it; records of an older CA holder lack it.
    tls_crl: str = ""

    def body(self) -> bytes:
        return json.dumps({
            "serial": self.serial, "issued_at": self.issued_at, "ca_fingerprint": self.ca_fingerprint,
            "sync_interval_s": self.sync_interval_s, "lighthouses": self.lighthouses,
            "blocklist": sorted(self.blocklist), "tls_crl": self.tls_crl}, sort_keys=True, separators=(",", ":")).encode()

    def next(self, now: int, **changes: Any) -> MeshRecord:
        return replace(self, serial=self.serial + 1, issued_at=now, **changes)


def ca_signing_key(ca_key_pem: str) -> Ed25519PrivateKey:
    raw = pem_body(ca_key_pem, ED25519_PRIVATE, 64)
    return Ed25519PrivateKey.from_private_bytes(raw[:32])


def sign(record: MeshRecord, ca_key_pem: str) -> dict[str, str]:
    body = record.body()
    return {"body": body.decode(), "signature": ca_signing_key(ca_key_pem).sign(_CONTEXT + body).hex()}


def _parse_body(body: dict[str, Any]) -> MeshRecord:
    lighthouses = body["lighthouses"]
    if not isinstance(lighthouses, dict) or not all(
            isinstance(v, list) and all(isinstance(a, str) for a in v) for v in lighthouses.values()):
        raise RecordError("record lighthouses must map overlay addresses to lists of host:port")
    blocklist = body["blocklist"]
    if not isinstance(blocklist, list) or not all(isinstance(f, str) for f in blocklist):
        raise RecordError("record blocklist must be a list of fingerprints")
    tls_crl = body.get("tls_crl", "")
    if not isinstance(tls_crl, str):
        raise RecordError("record tls_crl must be a PEM string")
    return MeshRecord(serial=int(body["serial"]), issued_at=int(body["issued_at"]),
                      ca_fingerprint=str(body["ca_fingerprint"]),
                      sync_interval_s=int(body["sync_interval_s"]),
                      lighthouses={ip: list(a) for ip, a in lighthouses.items()},
                      blocklist=tuple(blocklist), tls_crl=tls_crl)


def verify(signed: Any, ca_public_key_hex: str, ca_fingerprint: str) -> MeshRecord:
    """The record, if signed by the CA whose public key is given and naming that CA."""
    try:
        body = signed["body"].encode()
        signature = bytes.fromhex(signed["signature"])
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(ca_public_key_hex))
    except (TypeError, KeyError, ValueError, AttributeError):
        raise RecordError("malformed mesh record (expected body and hex signature)") from None
    try:
        public.verify(signature, _CONTEXT + body)
    except InvalidSignature:
        raise RecordError("mesh record is not signed by this mesh's CA") from None
    try:
        record = _parse_body(json.loads(body))
    except (ValueError, KeyError, TypeError) as err:
        raise RecordError(f"malformed mesh record body: {err}") from None
    if record.ca_fingerprint != ca_fingerprint:
        raise RecordError("mesh record names another CA")
    return record


def newer(candidate: MeshRecord, current: MeshRecord | None) -> bool:
    return current is None or candidate.serial > current.serial
