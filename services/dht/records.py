"""Provider records, their signatures, and the merge rule for a key with many providers.

A key (one per service) maps to a JSON object {worker_id: record}. Storing merges
instead of overwriting, so two workers announcing the same service never erase each
other (the seed's read-modify-write on one JSON list did). Each record is signed by its
node's ed25519 key and carries that key's proof of membership (the mesh secret's HMAC or
the overlay CA's signature, see services.identity.proofs); readers keep only authentic
records. Pure functions only.
"""

from __future__ import annotations

import json
from typing import Any

from kademlia.utils import digest

from services.common import keys
from services.identity.node_key import NodeIdentity, b64, unb64, verify
from services.identity.trust import MeshTrust

Record = dict[str, Any]
# rpcudp caps a datagram at 8 KiB and a signed record is about 450 bytes with the mesh
# secret's proof, 560 with the CA's (14 or 11 fit the budget): a key keeps the freshest
# providers that fit, and a lookup unions what several nodes hold.
MAX_PROVIDERS_PER_KEY = 14
VALUE_BUDGET_BYTES = 6500  # of rpcudp's 8 KiB, leaving room for the message around the value
SIGNED_FIELDS = ("service", "worker_id", "url", "idempotent", "model", "gpu_model", "gpu_free_bytes",
                 "models", "keys", "usage", "issued_at", "expires_at", "sequence", "key", "proof")
# What a stored record is: these fields, of these types, and nothing else (an unsigned extra
# field would be padding anyone can add to a member's record).
FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "service": str, "worker_id": str, "url": str, "idempotent": bool, "model": str, "gpu_model": str,
    "gpu_free_bytes": int, "issued_at": (int, float), "expires_at": (int, float),
    "sequence": int, "key": str, "proof": str, "sig": str}
# Lists only summary records carry (a catalog's models, a key record's keys and usage), each
# of entries of these types: absent when empty, so a provider record is none the longer.
# A model entry: [id, kind, context_length, service, load_percent] (services.common.models).
MODEL_ENTRY_TYPES = (str, str, int, str, int)
ENTRY_LISTS = {"models": MODEL_ENTRY_TYPES, "keys": keys.ENTRY_TYPES, "usage": keys.WINDOW_TYPES}
# A signed record is about 450 bytes (560 with a CA proof); the rest is room for long model
# and GPU names, a catalog record's models (~60 bytes each) and a key record's keys (~150
# bytes each, services.common.keys.MAX_MESH_KEYS of them). Past this, a member's record is
# junk, not a provider.
MAX_RECORD_BYTES = 4096
# announce_ttl_s is at most a day (config.py); a minute more for clocks that disagree.
MAX_LIFETIME_S = 86400 + 60


def service_key(service: str) -> str:
    return f"providers/{service}"


def storage_key(service: str) -> bytes:
    """The Kademlia key a service's providers are stored under (kademlia's SHA-1 digest)."""
    return digest(service_key(service))


def next_sequence(now: float, previous: int = 0) -> int:
    # Wall-clock milliseconds keep increasing across restarts without a persisted counter;
    # previous + 1 keeps two records issued in one millisecond (or after the clock stepped
    # back) in order.
    return max(int(now * 1000), previous + 1)


def new_record(service: str, worker_id: str, url: str, ttl_s: float, now: float,
               previous_sequence: int = 0, **summary: Any) -> Record:
    """An unsigned record; summary: idempotent, model, gpu_model, gpu_free_bytes, models
    (entries as MODEL_ENTRY_TYPES, on a catalog record), keys (entries as keys.ENTRY_TYPES,
    on a key record), usage (entries as keys.WINDOW_TYPES, on a key record)."""
    return {"service": service, "worker_id": worker_id, "url": url, "issued_at": now,
            "expires_at": now + ttl_s, "sequence": next_sequence(now, previous_sequence),
            "idempotent": bool(summary.get("idempotent", False)),
            "model": str(summary.get("model", "")),
            "gpu_model": str(summary.get("gpu_model", "")),
            "gpu_free_bytes": int(summary.get("gpu_free_bytes", 0)),
            **{name: [list(entry) for entry in summary[name]] for name in ENTRY_LISTS if summary.get(name)}}


def _signed_bytes(record: Record) -> bytes:
    return json.dumps([record.get(f) for f in SIGNED_FIELDS], separators=(",", ":")).encode()


def sign(record: Record, identity: NodeIdentity, proof: bytes) -> Record:
    record = {**record, "key": b64(identity.public_key), "proof": b64(proof)}
    return {**record, "sig": b64(identity.sign(_signed_bytes(record)))}


def is_authentic(record: Any, trust: MeshTrust) -> bool:
    """Well formed, from a key the mesh trusts, and signed by that key."""
    try:
        key, proof, sig = unb64(record["key"]), unb64(record["proof"]), unb64(record["sig"])
        valid_shape = isinstance(record["worker_id"], str) and isinstance(record["sequence"], int) \
            and isinstance(record["expires_at"], (int, float))
    except (KeyError, TypeError, ValueError):
        return False
    return valid_shape and trust.trusts(key, proof) and verify(key, sig, _signed_bytes(record))


def well_formed(record: Any, key: bytes, now: float) -> bool:
    """A record that may be kept under `key`: exactly a record's fields, of their types, filed
    under its own service's key (the only keys this DHT holds), small, and not claiming a
    longer life than an announce can have. Cheap: checked before any signature."""
    if not isinstance(record, dict) or record.keys() - ENTRY_LISTS.keys() != FIELD_TYPES.keys():
        return False
    for field_name, kind in FIELD_TYPES.items():
        value = record[field_name]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            return False
    return (all(isinstance(record.get(name, []), list) and all(typed_entry(e, types) for e in record.get(name, []))
                for name, types in ENTRY_LISTS.items())
            and len(encode(record)) <= MAX_RECORD_BYTES and record["expires_at"] <= now + MAX_LIFETIME_S
            and storage_key(record["service"]) == key)


def typed_entry(entry: Any, types: tuple[type, ...]) -> bool:
    """A list of exactly these types (a bool is not an int here)."""
    return isinstance(entry, list) and len(entry) == len(types) and all(
        isinstance(v, kind) and (isinstance(v, bool) == (kind is bool)) for v, kind in zip(entry, types, strict=True))


def authentic(providers: dict[str, Record], trust: MeshTrust, key: bytes, now: float) -> dict[str, Record]:
    """The records a reader may use: malformed, misfiled, forged, unsigned and foreign ones
    are dropped."""
    return partition(providers, trust, key, now)[0]


def partition(providers: dict[str, Record], trust: MeshTrust, key: bytes,
              now: float) -> tuple[dict[str, Record], dict[str, Record]]:
    """(the records usable under `key`, the others): each record is checked once."""
    kept: dict[str, Record] = {}
    dropped: dict[str, Record] = {}
    for worker, record in providers.items():
        good = well_formed(record, key, now) and record["worker_id"] == worker and is_authentic(record, trust)
        (kept if good else dropped)[worker] = record
    return kept, dropped


def tombstone(record: Record, now: float) -> Record:
    """A newer record that expires at once: merging it removes the worker's entry."""
    return {**record, "issued_at": now, "expires_at": now,
            "sequence": next_sequence(now, record["sequence"])}


def live(record: Record) -> bool:
    """Not a tombstone: a record that lives a while after it is issued."""
    return record["expires_at"] > record["issued_at"]


def decode(value: object) -> dict[str, Record]:
    """A stored value as providers; anything else (a peer may send any type) is none."""
    if not value or not isinstance(value, (str, bytes, bytearray)):
        return {}
    try:
        providers = json.loads(value)
    except ValueError:
        return {}
    return providers if isinstance(providers, dict) else {}


def encode(providers: dict[str, Record]) -> str:
    return json.dumps(providers, separators=(",", ":"), sort_keys=True)


def merge(current: dict[str, Record], incoming: dict[str, Record], now: float,
          limit: int = MAX_PROVIDERS_PER_KEY) -> dict[str, Record]:
    """Newest record per worker wins; expired records (tombstones included) are dropped; one
    record per signing key (its freshest) is kept; past `limit`, the freshest records are kept."""
    merged = dict(current)
    for worker, record in incoming.items():
        kept = merged.get(worker)
        if kept is None or record.get("sequence", 0) > kept.get("sequence", 0) and (
                kept.get("key") == record.get("key") or kept.get("expires_at", 0) <= now):
            # A live record binds its worker id to its key: another member cannot take it over.
            merged[worker] = record
    live = sorted(((w, r) for w, r in merged.items() if r.get("expires_at", 0) > now),
                  key=lambda item: item[1].get("issued_at", 0), reverse=True)
    return dict(_within_budget(_one_per_signer(live)[:limit]))


def _one_per_signer(records: list[tuple[str, Record]]) -> list[tuple[str, Record]]:
    """Of the records (freshest first) each signing key's first: a node signs with one key under
    one worker id, so one member's made-up worker ids cannot crowd the others out of a key."""
    signers: set[object] = set()
    kept = []
    for worker, record in records:
        if record.get("key") not in signers:
            signers.add(record.get("key"))
            kept.append((worker, record))
    return kept


def _within_budget(records: list[tuple[str, Record]]) -> list[tuple[str, Record]]:
    """The freshest records whose encoding fits in one rpcudp datagram with room to spare."""
    kept, size = [], 2
    for worker, record in records:
        size += len(encode({worker: record}))
        if size > VALUE_BUDGET_BYTES:
            break
        kept.append((worker, record))
    return kept
