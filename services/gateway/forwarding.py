"""Signed forwarding between gateways: only members of the mesh may forward a request.

A forwarded request carries a hop marker and a signature by the sending node over the
method, the path, the time, a nonce and the body's digest, with the node's key and its
proof of membership (the mesh secret's HMAC, or the overlay CA's proof of the key: see
services.common.identity). The receiver checks all of it, refuses a request outside a short
window or seen before (replay), and never forwards it again (no loops). Pure, but for
the nonce cache's clock, which is passed in.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from services.common.identity import MeshTrust, NodeIdentity, b64, unb64, verify

HOP = "x-mesh-hop"
FROM, KEY, PROOF = "x-mesh-from", "x-mesh-key", "x-mesh-proof"
TIME, NONCE, BODY, SIGNATURE = "x-mesh-time", "x-mesh-nonce", "x-mesh-body", "x-mesh-signature"
MESH_HEADERS = (HOP, FROM, KEY, PROOF, TIME, NONCE, BODY, SIGNATURE)
UNSIGNED_BODY = "streamed"  # a body too large to hold is not digested; the signature says so
WINDOW_S = 30.0  # clocks of mesh nodes may differ this much; older requests are refused


class Refused(Exception):
    """The request claims to be forwarded but does not prove it; the message says why."""


def body_digest(body: bytes | None) -> str:
    return UNSIGNED_BODY if body is None else hashlib.sha256(body).hexdigest()


def _signed(method: str, target: str, headers: dict[str, str]) -> bytes:
    return "\n".join([method, target, headers[FROM], headers[TIME], headers[NONCE], headers[BODY]]).encode()


def sign(identity: NodeIdentity, proof: bytes, worker_id: str, method: str, target: str,
         body: bytes | None, now: float) -> dict[str, str]:
    """The headers that make a request to `target` (path and query) a forwarded one."""
    headers = {HOP: "1", FROM: worker_id, KEY: b64(identity.public_key), PROOF: b64(proof),
               TIME: f"{now:.3f}", NONCE: b64(os.urandom(16)), BODY: body_digest(body)}
    headers[SIGNATURE] = b64(identity.sign(_signed(method, target, headers)))
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
        key, proof, signature = unb64(headers[KEY]), unb64(headers[PROOF]), unb64(headers[SIGNATURE])
        sent_at = float(headers[TIME])
        signed = _signed(method, target, headers)
    except (KeyError, ValueError):
        raise Refused("a forwarded request must carry every X-Mesh-* header") from None
    if not trust.trusts(key, proof):
        raise Refused("the forwarding node's key is not a member of this mesh")
    if not verify(key, signature, signed):
        raise Refused("the forwarding signature does not match the request")
    if not abs(now - sent_at) <= WINDOW_S:  # written so that a NaN time is refused too
        raise Refused(f"the forwarded request is more than {WINDOW_S:.0f} s old or early")
    if not nonces.first_sighting(headers[NONCE], now):
        raise Refused("the forwarded request was already received (replay)")


def check_body(headers: dict[str, str], body: bytes | None) -> None:
    """A digest was signed: the body must match it. A streamed body was signed as such."""
    if headers.get(BODY) != body_digest(body):
        raise Refused("the body does not match the signed digest")
