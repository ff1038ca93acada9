"""Tests for services.dht.records (merge rule) and services.dht.storage.ProviderStorage."""

from __future__ import annotations

import time

import pytest
from kademlia.utils import digest

from services.dht import records
from services.dht.storage import ProviderStorage

NOW = 1_700_000_000.0


def rec(worker: str, issued_at: float, url: str = "", ttl_s: float = 60) -> records.Record:
    return records.new_record("vision-ocr", worker, url or f"http://{worker}:8000", ttl_s, issued_at)


def test_new_record_fields():
    assert rec("a", NOW) == {"service": "vision-ocr", "worker_id": "a", "url": "http://a:8000",
                             "issued_at": NOW, "expires_at": NOW + 60, "sequence": int(NOW * 1000)}


def test_service_key():
    assert records.service_key("vision-ocr") == "providers/vision-ocr"


@pytest.mark.parametrize("order", ["old-then-new", "new-then-old"])
def test_newest_sequence_per_worker_wins_in_any_order(order):
    old, new = rec("a", NOW, url="http://old"), rec("a", NOW + 1, url="http://new")
    first, second = (old, new) if order == "old-then-new" else (new, old)

    merged = records.merge(records.merge({}, {"a": first}, NOW + 2), {"a": second}, NOW + 2)

    assert merged == {"a": new}


def test_two_workers_coexist():
    merged = records.merge({"a": rec("a", NOW)}, {"b": rec("b", NOW)}, NOW + 1)

    assert sorted(merged) == ["a", "b"]


def test_expired_records_are_dropped():
    merged = records.merge({"a": rec("a", NOW, ttl_s=10)}, {"b": rec("b", NOW, ttl_s=100)}, NOW + 10)

    assert list(merged) == ["b"]


def test_tombstone_removes_the_worker():
    live = rec("a", NOW)

    merged = records.merge({"a": live, "b": rec("b", NOW)}, {"a": records.tombstone(live, NOW + 1)}, NOW + 1)

    assert list(merged) == ["b"]


def test_tombstone_issued_in_the_same_millisecond_still_removes_the_worker():
    # BUG (records.py tombstone): the tombstone's sequence is int(now * 1000), so a withdraw in the
    # same millisecond as the announce (or after the clock stepped back) is not newer and is ignored.
    live = rec("a", NOW)

    merged = records.merge({"a": live}, {"a": records.tombstone(live, NOW)}, NOW)

    assert merged == {}


def test_encode_decode_round_trip():
    providers = {"a": rec("a", NOW), "b": rec("b", NOW)}

    assert records.decode(records.encode(providers)) == providers
    assert records.decode(records.encode(providers).encode()) == providers


@pytest.mark.parametrize("garbage", [None, "", b"", "not json", "[1, 2]", "42", b"\xff\xfe"])
def test_decode_garbage_is_empty(garbage):
    assert records.decode(garbage) == {}


def test_storage_merges_stores_of_two_workers_under_one_key():
    storage = ProviderStorage()
    key = digest(records.service_key("vision-ocr"))
    now = time.time()

    storage[key] = records.encode({"a": rec("a", now)})
    storage[key] = records.encode({"b": rec("b", now)})

    assert sorted(records.decode(storage.get(key))) == ["a", "b"]


def test_storage_keeps_newest_and_drops_tombstoned():
    storage = ProviderStorage()
    key = digest(records.service_key("vision-ocr"))
    now = time.time()
    live = rec("a", now - 5)

    storage[key] = records.encode({"a": live, "b": rec("b", now - 5)})
    storage[key] = records.encode({"a": records.tombstone(live, now - 1)})

    assert list(records.decode(storage.get(key))) == ["b"]


def test_record_count_counts_live_records_across_keys():
    storage = ProviderStorage()
    now = time.time()
    storage[digest("providers/x")] = records.encode({"a": rec("a", now), "b": rec("b", now)})
    storage[digest("providers/y")] = records.encode({"a": rec("a", now)})
    storage[digest("providers/z")] = records.encode({"c": rec("c", now - 100, ttl_s=10)})

    assert storage.record_count() == 3


def test_record_count_of_empty_storage_is_zero():
    assert ProviderStorage().record_count() == 0
