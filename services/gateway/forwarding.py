"""Signed forwarding between gateways: only members of the mesh may forward a request.

A forwarded request carries a hop marker and proof over the method, the path, the time,
a nonce and the body's digest. A node the overlay CA certified signs with its key and
sends the key and the CA's proof (see services.common.identity). A node that proves its
membership with the mesh secret sends the secret's MAC instead: anyone with the secret
can prove a key of its own, so a signature would say no more, and an HMAC costs ~2 µs
where an ed25519 signature and its check cost ~80. The receiver checks all of it,
refuses a request outside a short window or seen before (replay), and never forwards it
again (no loops). Pure, but for the nonce cache's clock, which is passed in.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from services.common.identity import MeshTrust, NodeIdentity, b64, proof_kind, unb64, verify

HOP = "x-mesh-hop"
FROM, KEY, PROOF = "x-mesh-from", "x-mesh-key", "x-mesh-proof"
TIME, NONCE, BODY, SIGNATURE = "x-mesh-time", "x-mesh-nonce", "x-mesh-body", "x-mesh-signature"
MAC = "x-mesh-mac"
SIGNED_HEADERS = (HOP, FROM, KEY, PROOF, TIME, NONCE, BODY, SIGNATURE)  # by a node the CA certified
MAC_HEADERS = (HOP, FROM, TIME, NONCE, BODY, MAC)  # by a node proven by the mesh secret
UNSIGNED_BODY = "streamed"  # a body too large to hold is not digested; the signature says so
WINDOW_S = 30.0  # clocks of mesh nodes may differ this much; older requests are refused


class Refused(Exception):
    """The request claims to be forwarded but does not prove it; the message says why."""


def body_digest(body: bytes | None) -> str:
    return UNSIGNED_BODY if body is None else hashlib.sha256(body).hexdigest()


def _signed(method: str, target: str, headers: dict[str, str]) -> bytes:
    return "\n".join([method, target, headers[FROM], headers[TIME], headers[NONCE], headers[BODY]]).encode()


def sign(identity: NodeIdentity, trust: MeshTrust, worker_id: str, method: str, target: str,
         body: bytes | None, now: float) -> dict[str, str]:
    """The headers that make a request to `target` (path and query) a forwarded one. The
    proof is asked each time: it becomes the CA's within seconds of a join while the gateway
    runs (the trust re-reads the overlay)."""
    proof = trust.proof(identity.public_key)
    if proof_kind(proof) == "secret":
        return sign_with_mac(trust, worker_id, method, target, body, now)
    return sign_with_key(identity, proof, worker_id, method, target, body, now)


def _unsigned(worker_id: str, body: bytes | None, now: float) -> dict[str, str]:
    return {HOP: "1", FROM: worker_id, TIME: f"{now:.3f}", NONCE: b64(os.urandom(16)), BODY: body_digest(body)}


def sign_with_key(identity: NodeIdentity, proof: bytes, worker_id: str, method: str, target: str,
                  body: bytes | None, now: float) -> dict[str, str]:
    headers = _unsigned(worker_id, body, now) | {KEY: b64(identity.public_key), PROOF: b64(proof)}
    headers[SIGNATURE] = b64(identity.sign(_signed(method, target, headers)))
    return headers


def sign_with_mac(trust: MeshTrust, worker_id: str, method: str, target: str, body: bytes | None,
                  now: float) -> dict[str, str]:
    headers = _unsigned(worker_id, body, now)
    headers[MAC] = b64(trust.mac(_signed(method, target, headers)))
    return headers


@dataclass
class NonceCache:
    """Nonces seen within the window; a second sighting is a replay."""

    seen: dict[str, float] = field(default_factory=dict)  # in arrival order, so oldest first

    def first_sighting(self, nonce: str, now: float) -> bool:
        # Forget from the old end only: O(1) per request however many are remembered.
        while self.seen and next(iter(self.seen.values())) < now - 2 * WINDOW_S:
            del self.seen[next(iter(self.seen))]
        if nonce in self.seen:
            return False
        self.seen[nonce] = now
        return True


def check(headers: dict[str, str], method: str, target: str, trust: MeshTrust, nonces: NonceCache,
          now: float) -> None:
    """Raise Refused unless the request is a fresh, authentic forward from a member."""
    try:
        sent_at = float(headers[TIME])
        signed = _signed(method, target, headers)
        if MAC in headers:
            check_mac(trust, signed, unb64(headers[MAC]))
        else:
            check_signature(trust, signed, unb64(headers[KEY]), unb64(headers[PROOF]), unb64(headers[SIGNATURE]))
    except (KeyError, ValueError):
        raise Refused("a forwarded request must carry every X-Mesh-* header") from None
    if not abs(now - sent_at) <= WINDOW_S:  # written so that a NaN time is refused too
        raise Refused(f"the forwarded request is more than {WINDOW_S:.0f} s old or early")
    if not nonces.first_sighting(headers[NONCE], now):
        raise Refused("the forwarded request was already received (replay)")


def check_mac(trust: MeshTrust, signed: bytes, mac: bytes) -> None:
    if not trust.checks_mac(signed, mac):
        raise Refused("the forwarding MAC does not match the request: not sent by a holder of this "
                      "mesh's secret, or altered")


def check_signature(trust: MeshTrust, signed: bytes, key: bytes, proof: bytes, signature: bytes) -> None:
    if not trust.trusts(key, proof):
        raise Refused("the forwarding node's key is not a member of this mesh")
    if not verify(key, signature, signed):
        raise Refused("the forwarding signature does not match the request")


def check_body(headers: dict[str, str], body: bytes | None) -> None:
    """A digest was signed: the body must match it. A streamed body was signed as such."""
    if headers.get(BODY) != body_digest(body):
        raise Refused("the body does not match the signed digest")
