"""Provider records and the merge rule for a DHT key that holds many providers.

A key (one per service) maps to a JSON object {worker_id: record}. Storing merges
instead of overwriting, so two workers announcing the same service never erase each
other (the seed's read-modify-write on one JSON list did). Pure functions only.
"""

from __future__ import annotations

import json
from typing import Any

Record = dict[str, Any]


def service_key(service: str) -> str:
    return f"providers/{service}"


def next_sequence(now: float, previous: int = 0) -> int:
    # Wall-clock milliseconds keep increasing across restarts without a persisted counter;
    # previous + 1 keeps two records issued in one millisecond (or after the clock stepped
    # back) in order.
    return max(int(now * 1000), previous + 1)


def new_record(service: str, worker_id: str, url: str, ttl_s: float, now: float,
               previous_sequence: int = 0) -> Record:
    return {"service": service, "worker_id": worker_id, "url": url, "issued_at": now,
            "expires_at": now + ttl_s, "sequence": next_sequence(now, previous_sequence)}


def tombstone(record: Record, now: float) -> Record:
    """A newer record that expires at once: merging it removes the worker's entry."""
    return {**record, "issued_at": now, "expires_at": now,
            "sequence": next_sequence(now, record["sequence"])}


def decode(value: str | bytes | None) -> dict[str, Record]:
    if not value:
        return {}
    try:
        providers = json.loads(value)
    except ValueError:
        return {}
    return providers if isinstance(providers, dict) else {}


def encode(providers: dict[str, Record]) -> str:
    return json.dumps(providers, separators=(",", ":"), sort_keys=True)


def merge(current: dict[str, Record], incoming: dict[str, Record], now: float) -> dict[str, Record]:
    """Newest record per worker wins; expired records (tombstones included) are dropped."""
    merged = dict(current)
    for worker, record in incoming.items():
        kept = merged.get(worker)
        if kept is None or record.get("sequence", 0) > kept.get("sequence", 0):
            merged[worker] = record
    return {w: r for w, r in merged.items() if r.get("expires_at", 0) > now}
