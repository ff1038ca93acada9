"""Which node keys are members of this mesh, and this node's own proof of its key
(services/identity/proofs.py has the two kinds).

A node in an overlay trusts CA proofs alone (checked against the CA key of its own
membership and the CA-signed blocklist): a node the CA revoked is refused even if it still
holds a mesh secret. Outside an overlay, a node trusts secret proofs of its mesh secret.
"""


from __future__ import annotations

import hmac
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.common.config import MESH_SECRET_FILE, Config, ConfigError
from services.identity.node_key import KEY_FILE, b64, verify
from services.identity.proofs import MESH_RECORD_CONTEXT, CaProof, check_ca_proof, secret_proof_of

log = logging.getLogger(__name__)
# The overlay's files read here; services/nebula writes them (NebulaPaths names the same).
OVERLAY_DIR, MESH_FILE, RECORD_FILE, CA_PROOF_FILE = "nebula", "mesh.json", "record.json", "identity.proof"
RECHECK_S = 2.0  # how stale the overlay view may be: a request pays a clock read, not a stat
_VERIFIED_MAX = 4096


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
        return secret_proof_of(self._secret, public_key)

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
