"""What a DHT request must show before it gets more than a small answer, and how many
requests one host may send.

A UDP source address is whatever a datagram claims, so an answer larger than its request,
sent to an address that never proved it receives, makes the node an amplifier against
that address (issue 12 H3). BitTorrent's DHT has the same problem and answers it with a
token (BEP 5): a short MAC of the asker's address under a secret that rotates, which only
a host that receives datagrams at that address can learn and send back. Tokens are
stateless here too: nothing is kept per asker. Pure, with an injected clock.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable

TOKEN_BYTES = 8
# BEP 5: "tokens up to ten minutes old are accepted"; the secret changes every five.
TOKEN_ROTATE_S = 300.0
# A real node sends a peer one or two requests per lookup or announce, a few hundred when it
# (re)announces many services at once; a flood sends thousands a second. Loopback tests and
# the bench run many nodes behind one address, hence room well above one node's needs.
RATE_PER_S = 500.0  # for services.common.ratelimit.RateLimiter, per source host
BURST = 1000.0


class Tokens:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._secrets = [os.urandom(16), os.urandom(16)]  # current, previous
        self._rotated_at = clock()

    def issue(self, address: tuple[str, int]) -> bytes:
        self._rotate()
        return _mac(self._secrets[0], address)

    def valid(self, address: tuple[str, int], token: object) -> bool:
        self._rotate()
        return isinstance(token, bytes) and any(
            hmac.compare_digest(token, _mac(secret, address)) for secret in self._secrets)

    def _rotate(self) -> None:
        if self.clock() - self._rotated_at >= TOKEN_ROTATE_S:
            self._secrets = [os.urandom(16), self._secrets[0]]
            self._rotated_at = self.clock()


def _mac(secret: bytes, address: tuple[str, int]) -> bytes:
    return hmac.new(secret, f"{address[0]}|{address[1]}".encode(), hashlib.sha256).digest()[:TOKEN_BYTES]
