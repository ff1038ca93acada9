"""What proves a node key is a member's, of two kinds told apart by their shape:

- a secret proof: an HMAC of the public key under the mesh secret every member was given
  at set-up (32 bytes);
- a CA proof: the overlay's CA holder signed, with the Nebula CA's own ed25519 key, that
  this node key belongs to the certificate (name, fingerprint) it enrolled, until that
  certificate expires. `init` and `join` obtain it (<state>/nebula/identity.proof).

Provider records carry (public key, proof, signature), so the kind of proof changes
neither format. Which proofs a node trusts is services/identity/trust.py's.
"""


from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.identity.node_key import verify

_PROOF_CONTEXT = b"meshworker/v1/node-key:"
SECRET_PROOF_BYTES = 32
# Domain separation: the CA key also signs Nebula certificates and mesh records. Either
# context makes the signed bytes an invalid protobuf ('o' after 'mesh' is wire type 7), so
# no signature here can pass for a Nebula certificate's.
_CA_PROOF_CONTEXT = b"meshworker/v1/node-key-ca:"
MESH_RECORD_CONTEXT = b"meshworker/v1/mesh-record:"
CA_PROOF_TAG = b"ca1"
_CA_FIXED = len(CA_PROOF_TAG) + 8 + 32 + 1  # tag, expiry, certificate fingerprint, name length


def secret_proof_of(secret: bytes, public_key: bytes) -> bytes:
    return hmac.new(secret, _PROOF_CONTEXT + public_key, hashlib.sha256).digest()


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


