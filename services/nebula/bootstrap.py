"""Creating a mesh (`init`) and entering one (`join`): the state directory's nebula/ part.

Both build the whole directory beside its final place and rename it into place last, so
a crash half-way leaves no half-made member behind (the temporary directory is removed
by the next attempt), and an existing membership is never overwritten.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from services.identity import overlay
from services.identity.mesh_ca import issue_node_certificate, load_or_create_node_key, serial_of
from services.identity.node_key import NodeIdentity, b64, unb64
from services.identity.proofs import check_ca_proof, sign_ca_proof
from services.nebula import client
from services.nebula.authority import allocation, tls, tokens
from services.nebula.authority.holder import check_name
from services.nebula.overlay import membership, pki, records
from services.nebula.overlay.membership import Membership
from services.nebula.overlay.records import MeshRecord
from services.nebula.overlay.state import EnrollmentError, NebulaPaths, StateError, write_atomically

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InitOptions:
    name: str
    network: str
    advertise: tuple[str, ...]  # underlay hosts joiners and nebula reach this lighthouse on
    nebula_port: int
    enroll_port: int
    sync_interval_s: int
    ca_duration: str = "8760h"


def refuse_if_member(final: NebulaPaths) -> None:
    if final.root.exists() and any(final.root.iterdir()):
        what = "holds this mesh's CA" if final.is_authority() else "is a member of a mesh"
        raise StateError(f"this node already {what} ({final.root}); meshworker never replaces it. "
                         f"To start over, stop the node and move {final.root} away")


def _fresh(state_dir: Path, purpose: str) -> NebulaPaths:
    tmp = NebulaPaths(Path(state_dir) / f".nebula-{purpose}.tmp")
    shutil.rmtree(tmp.root, ignore_errors=True)
    tmp.root.mkdir(mode=0o700, parents=True)
    return tmp


def _move_into_place(tmp: NebulaPaths, final: NebulaPaths) -> None:
    if final.root.exists():
        final.root.rmdir()  # empty (refuse_if_member checked); rmdir fails loudly otherwise
    tmp.root.rename(final.root)


def network_of(text: str) -> ipaddress.IPv4Network:
    try:
        network = ipaddress.IPv4Network(text, strict=True)
    except ValueError as err:
        raise ValueError(f"--network {text!r} is not an IPv4 network in CIDR form: {err}") from None
    if network.prefixlen > 30:
        raise ValueError(f"--network {text} is too small for a mesh (use /30 or larger, e.g. 10.42.0.0/16)")
    return network


def _certify_self(tmp: NebulaPaths, state_dir: Path, opts: InitOptions, host: pki.CertInfo, now: float
                  ) -> tuple[int, str]:
    """The CA holder's own proofs, as it makes a joiner's: its identity key certified, its mesh
    TLS certificate, and the enrollment endpoint's certificate. (TLS serial, enrollment cert.)"""
    identity = NodeIdentity.load_or_create(state_dir)
    write_atomically(tmp.identity_proof, sign_ca_proof(
        records.ca_signing_key(tmp.ca_key.read_text()), identity.public_key, opts.name, host.fingerprint,
        host.not_after), 0o644)
    tls_serial = _make_mesh_tls_ca(tmp, state_dir, opts.name, now, host.not_after)
    tls_crt, tls_key = tls.self_signed(f"meshworker enrollment {opts.name}", list(opts.advertise))
    write_atomically(tmp.tls_crt, tls_crt, 0o644)
    write_atomically(tmp.tls_key, tls_key)
    return tls_serial, tls_crt


def init_mesh(state_dir: Path, opts: InitOptions, now: float | None = None) -> Membership:
    """A new CA, this node as the first lighthouse, the authority's tables, a first record."""
    now = time.time() if now is None else now
    final, tmp = NebulaPaths.of(state_dir), None
    refuse_if_member(final)
    check_name(opts.name)
    network = network_of(opts.network)
    tmp = _fresh(state_dir, "init")
    tmp.authority.mkdir(mode=0o700)
    pki.make_ca(f"meshworker {opts.name}", opts.ca_duration, tmp.ca_crt, tmp.ca_key)
    ca = pki.cert_info(tmp.ca_crt)
    ip = str(next(network.hosts()))
    pki.keygen(tmp.host_key, tmp.root / "host.pub")
    pki.sign(tmp.ca_crt, tmp.ca_key, opts.name, f"{ip}/{network.prefixlen}",
             [tokens.BASE_GROUP, tokens.LIGHTHOUSE_GROUP], (tmp.root / "host.pub").read_text(), tmp.host_crt)
    host = pki.cert_info(tmp.host_crt)
    tls_serial, tls_crt = _certify_self(tmp, Path(state_dir), opts, host, now)
    allocation.save(tmp.allocations,
                    allocation.assign({}, ip, opts.name, host.fingerprint, host.not_after, lighthouse=True,
                                      tls_serial=tls_serial))
    tokens.save(tmp.tokens, {})
    record = MeshRecord(serial=1, issued_at=int(now), ca_fingerprint=ca.fingerprint,
                        sync_interval_s=opts.sync_interval_s,
                        lighthouses={ip: [f"{h}:{opts.nebula_port}" for h in opts.advertise]})
    membership.save_record(tmp, records.sign(record, tmp.ca_key.read_text()))
    member = Membership(name=opts.name, network=str(network), overlay_ip=ip, ca_fingerprint=ca.fingerprint,
                        ca_public_key=ca.public_key, lighthouse=True,
                        enroll_addresses=tuple(f"{h}:{opts.enroll_port}" for h in opts.advertise),
                        tls_sha256=tls.pin_of_pem(tls_crt), enroll_port=opts.enroll_port)
    membership.save(tmp, member)
    _move_into_place(tmp, final)
    log.info("created mesh %s: CA %s, this node %s at %s", network, ca.fingerprint, opts.name, ip)
    return member


def _make_mesh_tls_ca(tmp: NebulaPaths, state_dir: Path, name: str, now: float, not_after: int) -> int:
    """The mesh TLS CA (Envoy's mTLS between nodes), and the CA holder's own certificate
    from it, valid as long as its Nebula certificate; that certificate's serial."""
    ca = overlay.new_mesh_ca()
    write_atomically(tmp.mesh_tls_ca_key, overlay.ca_key_pem(ca))
    write_atomically(tmp.mesh_tls_ca_crt, ca.certificate_pem, 0o644)
    key = load_or_create_node_key(state_dir)
    cert = issue_node_certificate(ca, key.public_key(), name, now, not_after - now)
    write_atomically(tmp.node_tls_crt, cert, 0o644)
    return serial_of(cert)


@dataclass(frozen=True)
class JoinOptions:
    addresses: tuple[str, ...]
    token: str
    ca_fingerprint: str
    tls_sha256: str
    name: str
    lighthouse: bool = False
    advertise: tuple[str, ...] = ()  # host:port, for a lighthouse


def _fetch_ca(opts: JoinOptions, tmp: NebulaPaths) -> tuple[str, pki.CertInfo]:
    """The lighthouse's CA, refused unless its fingerprint is the pinned one."""
    address, status, doc = client.first_answering(list(opts.addresses), opts.tls_sha256, "GET", "/v1/ca")
    if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("ca"), str):
        raise client.JoinError(f"{address} did not send its CA: {client.refusal(status, doc)}")
    write_atomically(tmp.ca_crt, doc["ca"], 0o644)
    ca = pki.cert_info(tmp.ca_crt)
    if not ca.is_ca or ca.fingerprint != opts.ca_fingerprint.lower():
        raise client.JoinError(f"{address} serves the CA {ca.fingerprint}, not the pinned "
                               f"{opts.ca_fingerprint}: this is not the mesh the join command names; "
                               "the token was not sent")
    return address, ca


def _check_reply(reply: dict, ca: pki.CertInfo, public_key_hex: str) -> tuple[pki.CertInfo, MeshRecord]:
    try:
        cert = pki.cert_info_of_pem(reply["certificate"])
        record = records.verify(reply["record"], ca.public_key, ca.fingerprint)
    except (KeyError, TypeError, StateError, records.RecordError) as err:
        raise client.JoinError(f"the lighthouse's reply is unusable: {err}") from None
    if cert.issuer != ca.fingerprint or cert.public_key != public_key_hex or cert.overlay_ip != reply.get(
            "overlay_ip"):
        raise client.JoinError("the lighthouse returned a certificate that is not for this node's key "
                               "or not signed by the pinned CA")
    return cert, record


def _check_identity_proof(reply: dict, ca: pki.CertInfo, cert: pki.CertInfo, key: bytes) -> bytes | None:
    """The CA's proof of this node's identity key, refused unless it names this certificate."""
    if "identity_proof" not in reply:
        log.warning("the lighthouse did not certify this node's identity key (it runs an older "
                    "meshworker): peers trust this node only through a shared mesh secret")
        return None
    try:
        blob = unb64(reply["identity_proof"])
        proof = check_ca_proof(bytes.fromhex(ca.public_key), key, blob)
    except (TypeError, ValueError):
        proof = None
    if proof is None or (proof.name, proof.fingerprint, proof.expires_at) != (
            cert.name, cert.fingerprint, cert.not_after):
        raise client.JoinError("the lighthouse's proof of this node's identity key is not signed by the "
                               "pinned CA or not for this node's certificate")
    return blob


def _check_tls(reply: dict, key: ec.EllipticCurvePublicKey, name: str) -> tuple[bytes, bytes] | None:
    """The mesh TLS CA's certificate and this node's, refused unless it is for this key and name."""
    if "tls_certificate" not in reply:
        log.warning("the lighthouse issued no mesh TLS certificate (it runs an older meshworker): "
                    "peers trust this node's TLS only through a shared mesh secret")
        return None
    try:
        ca_pem, cert_pem = reply["tls_ca"].encode(), reply["tls_certificate"].encode()
        overlay.check_node_certificate(ca_pem, cert_pem, key, name)
    except (KeyError, AttributeError, ValueError) as err:
        raise client.JoinError(f"the lighthouse's mesh TLS certificate is unusable: {err}") from None
    return ca_pem, cert_pem


def join_mesh(state_dir: Path, opts: JoinOptions) -> Membership:
    """Key pair here, CA check, then only the public keys, token and name go to the lighthouse."""
    final = NebulaPaths.of(state_dir)
    refuse_if_member(final)
    check_name(opts.name)
    tmp = _fresh(state_dir, "join")
    address, ca = _fetch_ca(opts, tmp)
    pub = tmp.root / "host.pub"
    pki.keygen(tmp.host_key, pub)
    identity = NodeIdentity.load_or_create(Path(state_dir))
    tls_key = load_or_create_node_key(Path(state_dir))
    request = {"token": opts.token, "name": opts.name, "public_key": pub.read_text(),
               "identity_key": b64(identity.public_key), "tls_public_key": overlay.public_key_pem(tls_key)}
    if opts.lighthouse:
        request |= {"lighthouse": True, "advertise": list(opts.advertise)}
    _, status, reply = client.first_answering([address], opts.tls_sha256, "POST", "/v1/join", request)
    if status != 200 or not isinstance(reply, dict):
        shutil.rmtree(tmp.root, ignore_errors=True)
        code = reply.get("error", {}).get("code", "refused") if isinstance(reply, dict) else "refused"
        raise EnrollmentError(code, f"the lighthouse refused: {client.refusal(status, reply)}", status)
    cert, record = _check_reply(reply, ca, pki.pem_body(pub.read_text(), pki.X25519_PUBLIC, 32).hex())
    proof = _check_identity_proof(reply, ca, cert, identity.public_key)
    tls = _check_tls(reply, tls_key.public_key(), opts.name)
    write_atomically(tmp.host_crt, reply["certificate"], 0o644)
    if proof is not None:
        write_atomically(tmp.identity_proof, proof, 0o644)
    if tls is not None:
        write_atomically(tmp.mesh_tls_ca_crt, tls[0], 0o644)
        write_atomically(tmp.node_tls_crt, tls[1], 0o644)
    membership.save_record(tmp, reply["record"])
    member = Membership(name=opts.name, network=reply["network"], overlay_ip=cert.overlay_ip,
                        ca_fingerprint=ca.fingerprint, ca_public_key=ca.public_key,
                        lighthouse=opts.lighthouse, enroll_addresses=opts.addresses,
                        tls_sha256=opts.tls_sha256.lower())
    membership.save(tmp, member)
    _move_into_place(tmp, final)
    log.info("joined mesh %s as %s (%s), record serial %d", member.network, opts.name, cert.overlay_ip,
             record.serial)
    return member
