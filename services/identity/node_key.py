"""This node's ed25519 identity: its key, made once and kept in the state directory (mode
0600), and the signature checks every record and proof goes through."""


from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.common.statefile import StateError, create_once

KEY_FILE = "node.key"


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


