"""Tests for services.router.providers: the provider cache, smoothed latencies, preference order."""

from __future__ import annotations

import pytest

from services.router.providers import (
    NEGATIVE_TTL_S,
    Provider,
    ProviderCache,
)

T0 = 1_000.0


def provider(worker: str, issued_at: float = T0, ttl_s: float = 60) -> Provider:
    return Provider(worker, f"http://{worker}:8000", issued_at, issued_at + ttl_s)


def workers(providers: list[Provider] | None) -> list[str] | None:
    return None if providers is None else [p.worker_id for p in providers]


# --- ProviderCache ------------------------------------------------------------------------------

def test_unknown_service_is_not_cached():
    assert ProviderCache().get("svc", T0) is None


def test_put_then_get_returns_the_providers():
    cache = ProviderCache()

    cache.put("svc", [provider("a"), provider("b")], T0)

    assert workers(cache.get("svc", T0 + 1)) == ["a", "b"]
    assert len(cache) == 1


def test_get_is_bounded_by_each_records_expiry():
    cache = ProviderCache()
    cache.put("svc", [provider("a", ttl_s=10), provider("b", ttl_s=60)], T0)

    assert workers(cache.get("svc", T0 + 9.9)) == ["a", "b"]
    assert workers(cache.get("svc", T0 + 10)) == ["b"]
    assert cache.get("svc", T0 + 60) is None


def test_next_expiry_is_the_first_cached_records_and_moves_on_once_pruned():
    cache = ProviderCache()
    assert cache.next_expiry() == float("inf")
    cache.put("svc", [provider("a", ttl_s=10), provider("b", ttl_s=60)], T0)
    cache.put("other", [provider("c", ttl_s=30)], T0)

    assert cache.next_expiry() == T0 + 10
    assert cache.prune(T0 + 10)
    assert cache.next_expiry() == T0 + 30


def test_put_keeps_only_live_providers():
    cache = ProviderCache()

    cache.put("svc", [provider("old", issued_at=T0 - 100), provider("a")], T0)

    assert workers(cache.get("svc", T0)) == ["a"]


def test_put_replaces_the_previous_entry():
    cache = ProviderCache()
    cache.put("svc", [provider("a")], T0)

    cache.put("svc", [provider("b")], T0 + 1)

    assert workers(cache.get("svc", T0 + 1)) == ["b"]


@pytest.mark.parametrize("found", [[], [provider("old", issued_at=T0 - 100)]])
def test_nobody_hosting_it_is_remembered_briefly(found):
    cache = ProviderCache()
    cache.put("svc", [provider("a")], T0 - 1)

    cache.put("svc", found, T0)

    assert cache.get("svc", T0) == []
    assert cache.get("svc", T0 + NEGATIVE_TTL_S - 0.1) == []
    assert cache.get("svc", T0 + NEGATIVE_TTL_S) is None
    assert len(cache) == 0


def test_finding_providers_clears_the_negative_entry():
    cache = ProviderCache()
    cache.put("svc", [], T0)

    cache.put("svc", [provider("a")], T0 + 1)

    assert workers(cache.get("svc", T0 + 1)) == ["a"]
    assert cache.negative == {}


def test_prune_forgets_expired_providers_and_says_so():
    cache = ProviderCache()
    cache.put("one", [provider("a", ttl_s=10), provider("b", ttl_s=60)], T0)
    cache.put("gone", [provider("c", ttl_s=10)], T0)
    cache.put("kept", [provider("d", ttl_s=60)], T0)

    assert cache.prune(T0 + 10) is True

    assert sorted(cache.entries) == ["kept", "one"]
    assert workers(cache.entries["one"].providers) == ["b"]


def test_prune_without_expiry_changes_nothing():
    cache = ProviderCache()
    cache.put("svc", [provider("a")], T0)

    assert cache.prune(T0 + 1) is False
    assert workers(cache.get("svc", T0 + 1)) == ["a"]


def test_prune_forgets_expired_negative_entries_and_no_route_changes():
    """A name found nowhere is the router's memory, never a route in Envoy (issue 12 L3)."""
    cache = ProviderCache()
    cache.put("nobody", [], T0)
    cache.put("still", [], T0 + 3)

    assert cache.prune(T0 + NEGATIVE_TTL_S) is False

    assert cache.negative == {"still": T0 + 3 + NEGATIVE_TTL_S}
    assert cache.get("nobody", T0 + NEGATIVE_TTL_S) is None and cache.get("still", T0 + NEGATIVE_TTL_S) == []


def test_due_for_refresh_before_the_records_expire():
    cache = ProviderCache()
    cache.put("svc", [provider("a", ttl_s=60)], T0)  # due with under a quarter of its life left

    assert cache.due_for_refresh(T0 + 44) == []
    assert cache.due_for_refresh(T0 + 46) == ["svc"]


def test_due_for_refresh_when_any_provider_is_due():
    cache = ProviderCache()
    cache.put("svc", [provider("a", issued_at=T0 - 40), provider("b", issued_at=T0)], T0)

    assert cache.due_for_refresh(T0 + 6) == ["svc"]


def test_a_just_fetched_entry_is_not_refreshed_again_at_once():
    cache = ProviderCache()
    cache.put("svc", [provider("a", issued_at=T0 - 50)], T0)  # already due when fetched

    assert cache.due_for_refresh(T0 + 0.5) == []
    assert cache.due_for_refresh(T0 + 1) == ["svc"]
    assert cache.due_for_refresh(T0 + 0.5, min_age_s=0) == ["svc"]


def test_provider_refresh_due():
    p = provider("a", ttl_s=100)

    assert not p.refresh_due(T0 + 75)
    assert p.refresh_due(T0 + 75.1)
