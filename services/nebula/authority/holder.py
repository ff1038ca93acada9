"""What only the CA holder does: issue tokens, enroll joiners, revoke members.

Every read-modify-write of the token store, the address table and the mesh record runs
under one file lock, so concurrent joins (threads of the enrollment server, or a `token`
command beside it) never see each other's half-done work. The order of writes inside an
enrollment makes a crash err on the safe side: the address is recorded before the token
use is spent, so a crash can at worst leave an address reserved, never hand it out twice.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.identity import overlay
from services.identity.mesh_ca import issue_node_certificate, serial_of
from services.identity.node_key import b64, is_usable_key, unb64
from services.identity.proofs import sign_ca_proof
from services.identity.revocation import revocation_list
from services.nebula.authority import allocation, tokens
from services.nebula.overlay import membership, pki, records
from services.nebula.overlay.state import EnrollmentError, NebulaPaths, locked

log = logging.getLogger(__name__)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")  # a host name: no '/', no '..' prefix
HOST_PORT = re.compile(r"^[A-Za-z0-9.-]+:\d{1,5}$")
IDENTITY_KEY = re.compile(r"^[A-Za-z0-9_-]{43}$")  # 32 bytes, base64url without padding
REQUEST_KEYS = frozenset({"token", "name", "public_key", "lighthouse", "advertise", "identity_key",
                          "tls_public_key"})


@dataclass(frozen=True)
class JoinRequest:
    token: str
    name: str
    public_key: str  # normalised PEM
    lighthouse: bool = False
    advertise: tuple[str, ...] = ()  # a lighthouse's underlay host:port for nebula
    identity_key: bytes | None = None  # the node's ed25519 key (its provider records) to certify
    tls_public_key: str | None = None  # the node's P-256 key (Envoy's mTLS), PEM, to certify


@dataclass(frozen=True)
class SignedCert:
    pem: str
    fingerprint: str
    expires_unix: int


Signer = Callable[[str, str, list[str], str], SignedCert]  # name, ip/prefix, groups, public key


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME.match(name) or ".." in name:
        raise EnrollmentError("bad_name", f"name {name!r} is not a host name (letters, digits, '.', "
                              "'_', '-'; at most 63; no path characters)")
    return name


def check_identity_key(value: Any) -> bytes | None:
    """The joiner's identity key (raw 32 bytes), None when it sent none (an older meshworker)."""
    if value is None:
        return None
    raw = unb64(value) if isinstance(value, str) and IDENTITY_KEY.match(value) else b""
    if len(raw) != 32 or b64(raw) != value:
        raise EnrollmentError("bad_identity_key", "identity_key must be the node's ed25519 public key: "
                              "32 bytes in base64url without padding")
    if not is_usable_key(raw):  # a small-order key: anyone can forge its signatures
        raise EnrollmentError("bad_identity_key", "identity_key is a degenerate ed25519 key (a point of "
                              "small order or a non-canonical encoding); send the node's own key")
    return raw


def check_tls_public_key(value: Any) -> str | None:
    """The joiner's TLS public key (PEM), None when it sent none (an older meshworker)."""
    if value is None:
        return None
    try:
        overlay.parse_public_key(value if isinstance(value, str) else "")
    except ValueError as err:
        raise EnrollmentError("bad_tls_public_key", f"tls_public_key must be the node's ECDSA P-256 "
                              f"public key in PEM: {err}") from None
    return value


def parse_join_request(doc: Any) -> JoinRequest:
    """Validate a join request's JSON; EnrollmentError for anything unexpected."""
    if not isinstance(doc, dict) or not {"token", "name", "public_key"} <= doc.keys():
        raise EnrollmentError("bad_request", "expected a JSON object with token, name and public_key")
    if doc.keys() - REQUEST_KEYS:
        raise EnrollmentError("bad_request", f"unexpected fields {sorted(doc.keys() - REQUEST_KEYS)}; "
                              "groups come from the token, the address from the lighthouse")
    lighthouse, advertise = doc.get("lighthouse", False), doc.get("advertise", [])
    if not isinstance(lighthouse, bool) or not isinstance(advertise, list) \
            or not all(isinstance(a, str) and HOST_PORT.match(a) for a in advertise):
        raise EnrollmentError("bad_request", "lighthouse must be a boolean, advertise a list of host:port")
    if lighthouse and not advertise:
        raise EnrollmentError("bad_request", "a lighthouse must advertise its underlay host:port")
    if not isinstance(doc["token"], str) or not isinstance(doc["public_key"], str):
        raise EnrollmentError("bad_request", "token and public_key must be strings")
    return JoinRequest(token=doc["token"], name=check_name(doc["name"]),
                       public_key=pki.check_public_key(doc["public_key"]),
                       lighthouse=lighthouse, advertise=tuple(advertise),
                       identity_key=check_identity_key(doc.get("identity_key")),
                       tls_public_key=check_tls_public_key(doc.get("tls_public_key")))


def nebula_cert_signer(paths: NebulaPaths) -> Signer:
    def sign(name: str, ip_cidr: str, groups: list[str], public_key: str) -> SignedCert:
        out = paths.authority / f".sign-{name}.crt"
        out.unlink(missing_ok=True)  # nebula-cert refuses to overwrite
        try:
            pki.sign(paths.ca_crt, paths.ca_key, name, ip_cidr, groups, public_key, out)
            info = pki.cert_info(out)
            return SignedCert(out.read_text(), info.fingerprint, info.not_after)
        finally:
            out.unlink(missing_ok=True)
    return sign


def issue_token(paths: NebulaPaths, ttl_s: int, uses: int, groups: list[str], lighthouse: bool,
                now: float) -> str:
    with locked(paths.lock):
        text, store = tokens.issue(tokens.load(paths.tokens), ttl_s, uses, groups, lighthouse, now)
        tokens.save(paths.tokens, store)
    return text


def enroll(paths: NebulaPaths, request: JoinRequest, now: float, signer: Signer) -> dict[str, Any]:
    """Check the token, take the next free address, sign the joiner's key: the join reply."""
    with locked(paths.lock):
        store = tokens.load(paths.tokens)
        token_id, entry = tokens.check(store, request.token, now)
        if request.lighthouse and not entry.get("lighthouse"):
            raise EnrollmentError("lighthouse_not_allowed", "this token does not admit lighthouses; "
                                  "an admin issues one with `meshworker token --lighthouse`", 403)
        table = allocation.load(paths.allocations)
        if allocation.holder(table, request.name, now):
            raise EnrollmentError("name_taken", f"a node named {request.name!r} is already a member; "
                                  f"pick another name or `meshworker revoke {request.name}` first", 409)
        member = membership.load(paths)
        ip = allocation.next_free(table, member.network, now)
        groups = [tokens.BASE_GROUP, *entry["groups"],
                  *([tokens.LIGHTHOUSE_GROUP] if request.lighthouse else [])]
        cert = signer(request.name, f"{ip}/{member.prefix_len}", groups, request.public_key)
        proof = identity_proof(paths, request, cert)
        tls = node_tls(paths, request, cert, now)
        allocation.save(paths.allocations, allocation.assign(
            table, ip, request.name, cert.fingerprint, cert.expires_unix, request.lighthouse,
            serial_of(tls["tls_certificate"].encode()) if tls else None))
        tokens.save(paths.tokens, tokens.consume(store, token_id))
        signed = _record_with_lighthouse(paths, member, ip, request, now)
    log.info("enrolled %s as %s (groups %s, token %s)", request.name, ip, ",".join(groups), token_id)
    reply = {"certificate": cert.pem, "ca": paths.ca_crt.read_text(), "record": signed,
             "overlay_ip": ip, "network": member.network, "groups": groups}
    return reply | ({"identity_proof": b64(proof)} if proof else {}) | tls


def identity_proof(paths: NebulaPaths, request: JoinRequest, cert: SignedCert) -> bytes | None:
    """The CA's proof that the joiner's identity key is the node of this certificate, valid
    as long as the certificate: what makes its provider records and forwards trusted."""
    if request.identity_key is None:
        return None
    return sign_ca_proof(records.ca_signing_key(paths.ca_key.read_text()), request.identity_key,
                         request.name, cert.fingerprint, cert.expires_unix)


def node_tls(paths: NebulaPaths, request: JoinRequest, cert: SignedCert, now: float) -> dict[str, str]:
    """The joiner's mesh TLS certificate and the CA's, for as long as its Nebula certificate
    (nothing when it sent no TLS key, or this mesh was made before it had a TLS CA)."""
    if request.tls_public_key is None or not paths.mesh_tls_ca_key.exists():
        return {}
    ca = overlay.load_mesh_ca(paths.mesh_tls_ca_crt.read_bytes(), paths.mesh_tls_ca_key.read_bytes())
    leaf = issue_node_certificate(ca, overlay.parse_public_key(request.tls_public_key), request.name, now,
                                  cert.expires_unix - now)
    return {"tls_certificate": leaf.decode(), "tls_ca": ca.certificate_pem.decode()}


def _record_with_lighthouse(paths: NebulaPaths, member: membership.Membership, ip: str,
                            request: JoinRequest, now: float) -> dict:
    record, signed = membership.load_record(paths, member)
    if not request.lighthouse:
        return signed
    updated = record.next(int(now), lighthouses={**record.lighthouses, ip: list(request.advertise)})
    signed = records.sign(updated, paths.ca_key.read_text())
    membership.save_record(paths, signed)
    return signed


def revoke(paths: NebulaPaths, name: str, now: float) -> tuple[str, records.MeshRecord]:
    """Block `name`'s Nebula certificate and its mesh TLS certificate: the new record is saved
    before the table marks it revoked, so a crash in between leaves it blocked (a second
    revoke then finds nothing to do)."""
    with locked(paths.lock):
        table = allocation.load(paths.allocations)
        revoked_table, fingerprint = allocation.revoke(table, name, now)
        member = membership.load(paths)
        record, _ = membership.load_record(paths, member)
        ip = allocation.holder(table, name, now)
        updated = record.next(int(now), blocklist=tuple(sorted({*record.blocklist, fingerprint})),
                              lighthouses={k: v for k, v in record.lighthouses.items() if k != ip},
                              tls_crl=tls_crl(paths, revoked_table, record.serial + 1, now))
        membership.save_record(paths, records.sign(updated, paths.ca_key.read_text()))
        allocation.save(paths.allocations, revoked_table)
    if "tls_serial" not in table[ip] and paths.mesh_tls_ca_key.exists():
        log.warning("%s's mesh TLS certificate (if any) was issued before its serial was kept: "
                    "no CRL names it, and peers' Envoy accept it until it expires", name)
    log.info("revoked %s (%s, certificate %s)", name, ip, fingerprint)
    return fingerprint, updated


def tls_crl(paths: NebulaPaths, table: dict[str, Any], number: int, now: float) -> str:
    """The mesh TLS CA's CRL of every revoked node's TLS certificate, numbered as the record
    that carries it (a newer CRL comes in a newer record); "" when none is to be named."""
    serials = allocation.revoked_tls_serials(table)
    if not serials or not paths.mesh_tls_ca_key.exists():
        return ""
    ca = overlay.load_mesh_ca(paths.mesh_tls_ca_crt.read_bytes(), paths.mesh_tls_ca_key.read_bytes())
    return revocation_list(ca, serials, number, now).decode()
