"""Limits per key per minute, counted over the mesh (services/router/limits.py)."""

from __future__ import annotations

from services.common.keys import ApiKey
from services.router.limits import Count, Published, blocked, mesh_counts, window_of

MINUTE = 29_000_000  # a window: seconds / 60
START = MINUTE * 60
RPM = ApiKey("mk-000000000001", "rpm", "x" * 43, requests_per_minute=10)
TPM = ApiKey("mk-000000000002", "tpm", "y" * 43, tokens_per_minute=100)
FREE = ApiKey("mk-000000000003", "free", "z" * 43)


def test_peers_counts_of_this_minute_add_to_this_nodes():
    published = [Published("rpm", MINUTE, Count(4, 0)), Published("rpm", MINUTE - 1, Count(50, 0)),
                 Published("tpm", MINUTE, Count(1, 60))]
    counts = mesh_counts({"rpm": Count(5, 0), "tpm": Count(1, 30)}, published, MINUTE)
    assert counts == {"rpm": Count(9, 0), "tpm": Count(2, 90)}  # last minute's 50 do not count


def test_a_key_at_a_limit_is_blocked_until_its_minute_ends():
    now = START + 45.2
    assert window_of(now) == MINUTE
    counts = {"rpm": Count(10, 0), "tpm": Count(3, 99), "free": Count(10**6, 10**9)}
    assert blocked((RPM, TPM, FREE), counts, now) == (("rpm", 15),)
    assert blocked((RPM, TPM), counts | {"tpm": Count(3, 100)}, now) == (("rpm", 15), ("tpm", 15))
    assert blocked((RPM,), {"rpm": Count(9, 0)}, now) == ()
