"""This node's ed25519 identity, and which node keys the mesh trusts.

A node makes its key once and keeps it in the state directory (mode 0600). Membership is
proven by a key proof: today an HMAC of the public key under the mesh secret that every
member was given at set-up; once the overlay's CA exists, a CA signature of the key
takes its place. Records and forwarded requests carry (public key, proof, signature),
so swapping the proof's kind changes neither format.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.common.config import MESH_SECRET_FILE, Config, ConfigError
from services.common.statefile import StateError, create_once

KEY_FILE = "node.key"
_PROOF_CONTEXT = b"meshworker/v1/node-key:"


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
            # The dht and the gateway may both start first: whoever links first wins and
            # both read back the one key.
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


def verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


class MeshTrust:
    """Keys endorsed with the mesh secret are members; nothing else is."""

    def __init__(self, secret: str):
        self._secret = secret.encode()

    def proof(self, public_key: bytes) -> bytes:
        return hmac.new(self._secret, _PROOF_CONTEXT + public_key, hashlib.sha256).digest()

    def trusts(self, public_key: bytes, proof: bytes) -> bool:
        return hmac.compare_digest(self.proof(public_key), proof)


def new_mesh_secret() -> str:
    return b64(os.urandom(32))


def mesh_trust(cfg: Config) -> MeshTrust:
    if cfg.mesh_secret is None:
        raise ConfigError("mesh_secret", f"no mesh secret: set MESHWORKER_MESH_SECRET, or start the node "
                                         f"with `meshworker up`, which writes {cfg.state_dir}/{MESH_SECRET_FILE}")
    return MeshTrust(cfg.mesh_secret)
