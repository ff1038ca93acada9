"""This node's ed25519 identity, and which node keys the mesh trusts.

A node makes its key once and keeps it in the state directory (mode 0600). Membership is
proven by a key proof, of one of two kinds, told apart by their shape:

- a secret proof: an HMAC of the public key under the mesh secret every member was given
  at set-up (32 bytes);
- a CA proof: the overlay's CA holder signed, with the Nebula CA's own ed25519 key, that
  this node key belongs to the certificate (name, fingerprint) it enrolled, until that
  certificate expires. `init` and `join` obtain it (<state>/nebula/identity.proof).

Provider records carry (public key, proof, signature), so the kind of
proof changes neither format. A node in an overlay trusts CA proofs alone (checked against
the CA key of its own membership and the CA-signed blocklist): a node the CA revoked is
refused even if it still holds a mesh secret. Outside an overlay, a node trusts secret
proofs of its mesh secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.common.config import MESH_SECRET_FILE, Config, ConfigError
from services.common.statefile import StateError, create_once

log = logging.getLogger(__name__)
KEY_FILE = "node.key"
_PROOF_CONTEXT = b"meshworker/v1/node-key:"
SECRET_PROOF_BYTES = 32
# The overlay's files read here; services/nebula writes them (NebulaPaths names the same).
OVERLAY_DIR, MESH_FILE, RECORD_FILE, CA_PROOF_FILE = "nebula", "mesh.json", "record.json", "identity.proof"
# Domain separation: the CA key also signs Nebula certificates and mesh records. Either
# context makes the signed bytes an invalid protobuf ('o' after 'mesh' is wire type 7), so
# no signature here can pass for a Nebula certificate's.
_CA_PROOF_CONTEXT = b"meshworker/v1/node-key-ca:"
MESH_RECORD_CONTEXT = b"meshworker/v1/mesh-record:"
CA_PROOF_TAG = b"ca1"
_CA_FIXED = len(CA_PROOF_TAG) + 8 + 32 + 1  # tag, expiry, certificate fingerprint, name length
RECHECK_S = 2.0  # how stale the overlay view may be: a request pays a clock read, not a stat
_VERIFIED_MAX = 4096


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class NodeIdentity:
    private_key: Ed25519PrivateKey
    public_key: bytes  # raw 32 bytes

    @classmethod
    def load_or_create(cls, state_dir: Path) -> NodeIdentity:
        path = state_dir / KEY_FILE
        if not path.exists():
            # `up` makes it before any program starts; should two processes race anyway,
            # whoever links first wins and both read back the one key.
            state_dir.mkdir(parents=True, exist_ok=True)
            create_once(path, Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()))
        raw = path.read_bytes()
        if len(raw) != 32:
            raise StateError(f"{path} is not a 32-byte ed25519 key; move it away to make a new identity")
        key = Ed25519PrivateKey.from_private_bytes(raw)
        return cls(key, key.public_key().public_bytes(serialization.Encoding.Raw,
                                                      serialization.PublicFormat.Raw))

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)


# The ed25519 points of small order (1, 2, 4, 8), encoded with the sign bit cleared, as
# libsodium's crypto_sign_verify blocklist has them (y = 0, 1, the two of order 8, and p-1,
# p, p+1). With such a key [k]A is (nearly) nothing, so "R = A, S = 0" verifies for any
# message under OpenSSL's cofactorless check: anyone could sign as that key (RFC 8032 5.1.7
# does not ask for this check; libsodium and Zcash's ZIP 215 discussion explain why to add it).
_SMALL_ORDER_KEYS = frozenset(bytes.fromhex(h) for h in (
    "00" * 32, "01" + "00" * 31,
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "ec" + "ff" * 30 + "7f", "ed" + "ff" * 30 + "7f", "ee" + "ff" * 30 + "7f",
))
_P25519 = 2**255 - 19


def is_usable_key(public_key: bytes) -> bool:
    """32 bytes that are the canonical encoding of a point not of small order: a key that
    only a holder of its private key can sign for. (A point that is no point at all is
    refused by OpenSSL when it is used.)"""
    if len(public_key) != 32:
        return False
    unsigned = public_key[:31] + bytes([public_key[31] & 0x7F])
    return unsigned not in _SMALL_ORDER_KEYS and int.from_bytes(unsigned, "little") < _P25519


def verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    if not is_usable_key(public_key):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class CaProof:
    """The CA holder's word: a node key belongs to certificate `name` (`fingerprint`, as
    Nebula's blocklist names it) until `expires_at` (the certificate's expiry).

    Encoded: b"ca1" | expiry (u64, big-endian) | fingerprint (32) | name length (u8) | name
    | ed25519 signature (64) over the context, the node key and everything between the tag
    and the signature.
    """

    expires_at: int
    fingerprint: str  # hex
    name: str
    signature: bytes = b""

    def body(self) -> bytes:
        name = self.name.encode("ascii")
        return struct.pack(">Q", self.expires_at) + bytes.fromhex(self.fingerprint) + bytes([len(name)]) + name

    def encode(self) -> bytes:
        return CA_PROOF_TAG + self.body() + self.signature

    @classmethod
    def decode(cls, blob: bytes) -> CaProof | None:
        if len(blob) < _CA_FIXED + 64 or not blob.startswith(CA_PROOF_TAG):
            return None
        end = _CA_FIXED + blob[_CA_FIXED - 1]
        if len(blob) != end + 64:
            return None
        try:
            name = blob[_CA_FIXED:end].decode("ascii")
        except UnicodeDecodeError:
            return None
        (expires_at,) = struct.unpack(">Q", blob[3:11])
        return cls(expires_at, blob[11:43].hex(), name, blob[end:])


def sign_ca_proof(ca_key: Ed25519PrivateKey, public_key: bytes, name: str, fingerprint: str,
                  expires_at: int) -> bytes:
    """What the CA holder hands a node at init or join (ValueError on a malformed input)."""
    if len(public_key) != 32 or len(bytes.fromhex(fingerprint)) != 32 or not 0 < len(name) < 256:
        raise ValueError("a CA proof binds a 32-byte key to a named certificate's SHA-256 fingerprint")
    unsigned = CaProof(int(expires_at), fingerprint.lower(), name)
    signature = ca_key.sign(_CA_PROOF_CONTEXT + public_key + unsigned.body())
    return CaProof(unsigned.expires_at, unsigned.fingerprint, name, signature).encode()


def check_ca_proof(ca_public_key: bytes, public_key: bytes, blob: bytes) -> CaProof | None:
    """The proof if that CA signed it for this key; its expiry and the blocklist are the caller's."""
    proof = CaProof.decode(blob)
    if proof is None or len(public_key) != 32 \
            or not verify(ca_public_key, proof.signature, _CA_PROOF_CONTEXT + public_key + proof.body()):
        return None
    return proof


def proof_kind(proof: bytes) -> str:
    """Which kind a proof is ("ca", "secret" or "none"): for logs and for choosing how to
    sign our own requests, never for trusting another's."""
    if len(proof) == SECRET_PROOF_BYTES:
        return "secret"
    return "ca" if CaProof.decode(proof) is not None else "none"


@dataclass(frozen=True)
class OverlayView:
    """What the overlay's files said when last read."""

    ca_key: bytes | None = None  # raw ed25519; None: not in an overlay (or its state is unusable)
    blocklist: frozenset[str] = frozenset()  # certificate fingerprints, from the CA-signed record
    address: str = ""  # this node's overlay address, from its membership ("" outside an overlay)
    own: bytes | None = None  # this node's CA proof as stored


class OverlayTrust:
    """The mesh CA as this node's overlay state holds it, re-read when the state changes.

    The CA key comes from mesh.json (init and join take it from ca.crt with nebula-cert and
    check it against the pinned fingerprint; it verifies mesh records too), the blocklist
    from the CA-signed record.json, this node's proof from identity.proof. The files are
    stat'ed at most every `recheck_s`, so a join or revoke while the dht runs reaches it
    within seconds, and a record check costs a clock read and a dict lookup.
    """

    def __init__(self, state_dir: Path, recheck_s: float = RECHECK_S,
                 monotonic: Callable[[], float] = time.monotonic):
        self.root = Path(state_dir) / OVERLAY_DIR
        self._recheck_s, self._monotonic = recheck_s, monotonic
        self._due = float("-inf")
        self._stamps: tuple | None = None
        self.view = OverlayView()
        self._verified: dict[tuple[bytes, bytes], CaProof] = {}
        self._own: tuple[bytes, CaProof | None] | None = None  # (key, its checked proof)

    def configured(self) -> bool:
        return (self.root / MESH_FILE).exists()

    def joined(self) -> bool:
        """This node is in an overlay (as its files said at most `recheck_s` ago)."""
        self.refresh()
        return self.view.ca_key is not None

    def refresh(self, force: bool = False) -> None:
        now = self._monotonic()
        if not force and now < self._due:
            return
        self._due = now + self._recheck_s
        stamps = tuple(_stamp(self.root / name) for name in (MESH_FILE, RECORD_FILE, CA_PROOF_FILE))
        if stamps != self._stamps:
            self._stamps = stamps
            self.view = read_overlay(self.root, self.view)
            self._verified.clear()
            self._own = None
            if self.view.ca_key is not None:
                log.info("overlay trust: mesh CA %s, %d blocked certificates, %s", self.view.ca_key.hex()[:16],
                         len(self.view.blocklist), "this node's key certified" if self.view.own else
                         "this node's key not certified by the CA")

    def member(self, public_key: bytes, blob: bytes, now: float) -> bool:
        """A valid, unexpired CA proof for this key, of a certificate not on the blocklist."""
        self.refresh()
        proof = self._verified.get((public_key, blob))
        if proof is None:
            if self.view.ca_key is None:
                return False
            proof = check_ca_proof(self.view.ca_key, public_key, blob)
            if proof is None or proof.fingerprint in self.view.blocklist:
                return False
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.clear()
            self._verified[(public_key, blob)] = proof
        return now < proof.expires_at

    def own_proof(self, public_key: bytes, now: float) -> bytes | None:
        """This node's CA proof, when the CA certified this very key and it has not expired."""
        self.refresh()
        view = self.view
        if view.own is None or view.ca_key is None:
            return None
        if self._own is None or self._own[0] != public_key:
            checked = check_ca_proof(view.ca_key, public_key, view.own)
            if checked is None:
                log.warning("%s is not the mesh CA's proof of this node's key (%s was replaced?): "
                            "using the mesh secret instead", self.root / CA_PROOF_FILE, KEY_FILE)
            self._own = (public_key, checked)
        checked = self._own[1]
        return view.own if checked is not None and now < checked.expires_at else None


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def read_overlay(root: Path, previous: OverlayView | None = None) -> OverlayView:
    """The overlay's trust anchors from its files; a file that cannot be used is logged, and
    leaves no CA (nothing certified is trusted) or, for the record, the previous blocklist."""
    try:
        mesh = json.loads((root / MESH_FILE).read_text())
        ca_key = bytes.fromhex(mesh["ca_public_key"])
        if len(ca_key) != 32:
            raise ValueError("ca_public_key is not 32 bytes")
    except FileNotFoundError:
        return OverlayView()
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("overlay membership %s is unusable (%s): no CA proof is trusted", root / MESH_FILE, err)
        return OverlayView()
    try:
        own: bytes | None = (root / CA_PROOF_FILE).read_bytes()
    except OSError:
        own = None
    blocklist = previous.blocklist if previous is not None and previous.ca_key == ca_key else frozenset()
    return OverlayView(ca_key, _read_blocklist(root / RECORD_FILE, ca_key, mesh.get("ca_fingerprint"), blocklist),
                       str(mesh.get("overlay_ip", "")), own)


def _read_blocklist(path: Path, ca_key: bytes, ca_fingerprint: object, previous: frozenset[str]) -> frozenset[str]:
    try:
        signed = json.loads(path.read_text())["signed"]
        body = signed["body"].encode()
        if not verify(ca_key, bytes.fromhex(signed["signature"]), MESH_RECORD_CONTEXT + body):
            raise ValueError("not signed by the mesh CA")
        record = json.loads(body)
        if record["ca_fingerprint"] != ca_fingerprint or not all(isinstance(f, str) for f in record["blocklist"]):
            raise ValueError("not a record of this mesh")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        log.warning("mesh record %s is unusable (%s): keeping the previous blocklist", path, err)
        return previous
    return frozenset(record["blocklist"])


class MeshTrust:
    """Which node keys are members of this mesh, and this node's own proof.

    In an overlay, only a proof its CA signed is trusted; outside one, only a secret proof
    of the given secret; anything else is refused.
    """

    def __init__(self, secret: str | None, overlay: OverlayTrust | None = None,
                 clock: Callable[[], float] = time.time):
        self._secret = secret.encode() if secret is not None else None
        self.overlay = overlay
        self._clock = clock

    def secret_proof(self, public_key: bytes) -> bytes | None:
        if self._secret is None:
            return None
        return hmac.new(self._secret, _PROOF_CONTEXT + public_key, hashlib.sha256).digest()

    def proof(self, public_key: bytes) -> bytes:
        """The proof this node sends: the CA's when the overlay certified this key, else the
        secret's; empty (trusted by nobody) when it has neither."""
        own = self.overlay.own_proof(public_key, self._clock()) if self.overlay is not None else None
        return own or self.secret_proof(public_key) or b""

    def trusts(self, public_key: bytes, proof: bytes) -> bool:
        if self.overlay is not None and self.overlay.joined():
            return self.overlay.member(public_key, proof, self._clock())
        expected = self.secret_proof(public_key)
        return expected is not None and hmac.compare_digest(expected, proof)

    def refresh(self) -> None:
        """Re-read the overlay's files now if they changed (before signing with `proof`)."""
        if self.overlay is not None:
            self.overlay.refresh(force=True)


def new_mesh_secret() -> str:
    return b64(os.urandom(32))


def mesh_trust(cfg: Config) -> MeshTrust:
    """The node's trust: its mesh secret if it has one, and its overlay's CA, which it
    follows from now on (a node may join an overlay while it runs)."""
    overlay = OverlayTrust(cfg.state_dir)
    if cfg.mesh_secret is None and not overlay.configured():
        raise ConfigError("mesh_secret", f"no mesh secret and no overlay: set MESHWORKER_MESH_SECRET, start "
                                         f"the node with `meshworker up`, which writes "
                                         f"{cfg.state_dir}/{MESH_SECRET_FILE}, or enroll it in an overlay "
                                         "(`meshworker init` or `join`), whose CA then vouches for its key")
    return MeshTrust(cfg.mesh_secret, overlay)
