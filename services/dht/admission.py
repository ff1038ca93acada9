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
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

TOKEN_BYTES = 8
# BEP 5: "tokens up to ten minutes old are accepted"; the secret changes every five.
TOKEN_ROTATE_S = 300.0
# A real node sends a peer one or two requests per lookup or announce, a few hundred when it
# (re)announces many services at once; a flood sends thousands a second. Loopback tests and
# the bench run many nodes behind one address, hence room well above one node's needs.
RATE_PER_S = 500.0
BURST = 1000.0
MAX_HOSTS = 4096  # buckets kept; a forged flood of new addresses evicts the least recent


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


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per source host: BURST requests at once, RATE_PER_S after that."""

    def __init__(self, rate_per_s: float = RATE_PER_S, burst: float = BURST,
                 clock: Callable[[], float] = time.monotonic):
        self.rate_per_s, self.burst, self.clock = rate_per_s, burst, clock
        self.dropped = 0  # requests refused since start: meshworker_dht_rate_limited_requests_total
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, host: str) -> bool:
        now = self.clock()
        bucket = self._buckets.pop(host, None) or _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate_per_s)
        bucket.at = now
        self._buckets[host] = bucket  # most recent last
        if len(self._buckets) > MAX_HOSTS:
            self._buckets.popitem(last=False)
        if bucket.tokens < 1:
            self.dropped += 1
            return False
        bucket.tokens -= 1
        return True
