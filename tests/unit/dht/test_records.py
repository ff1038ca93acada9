"""Tests for services.dht.records (signing, merge rule) and services.dht.storage.ProviderStorage."""

from __future__ import annotations

import json
import time
import types

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kademlia.utils import digest

from services.dht import records
from services.dht import storage as storage_module
from services.dht.storage import ProviderStorage
from services.identity.node_key import NodeIdentity, b64
from services.identity.proofs import sign_ca_proof
from services.identity.trust import MESH_FILE, OVERLAY_DIR, MeshTrust, OverlayTrust

NOW = 1_700_000_000.0
TRUST = MeshTrust("m" * 32)
KEY = digest(records.service_key("vision-ocr"))


def new_identity() -> NodeIdentity:
    key = Ed25519PrivateKey.generate()
    return NodeIdentity(key, key.public_key().public_bytes(serialization.Encoding.Raw,
                                                           serialization.PublicFormat.Raw))


IDENTITIES: dict[str, NodeIdentity] = {}


def identity_of(worker: str) -> NodeIdentity:
    return IDENTITIES.setdefault(worker, new_identity())


def rec(worker: str, issued_at: float, url: str = "", ttl_s: float = 60, service: str = "vision-ocr",
        **summary) -> records.Record:
    return records.new_record(service, worker, url or f"http://{worker}:8000", ttl_s, issued_at, **summary)


def signed(worker: str, issued_at: float, trust: MeshTrust = TRUST, **kwargs) -> records.Record:
    node = identity_of(worker)
    return records.sign(rec(worker, issued_at, **kwargs), node, trust.proof(node.public_key))


def test_new_record_fields():
    assert rec("a", NOW) == {"service": "vision-ocr", "worker_id": "a", "url": "http://a:8000",
                             "issued_at": NOW, "expires_at": NOW + 60, "sequence": int(NOW * 1000),
                             "idempotent": False, "model": "", "gpu_model": "", "gpu_free_bytes": 0,
                             }  # no models, keys or usage: those lists are absent when empty


def test_new_record_takes_the_capability_summary():
    record = rec("a", NOW, idempotent=1, gpu_model="H100", gpu_free_bytes="1024")

    assert (record["idempotent"], record["gpu_model"], record["gpu_free_bytes"]) == (True, "H100", 1024)


def test_sequence_follows_the_previous_one_within_a_millisecond():
    assert records.new_record("s", "a", "u", 60, NOW, previous_sequence=int(NOW * 1000))["sequence"] \
        == int(NOW * 1000) + 1


def test_service_key():
    assert records.service_key("vision-ocr") == "providers/vision-ocr"


# --- signatures ---------------------------------------------------------------------------------

def test_signed_record_is_authentic_and_carries_key_proof_and_signature():
    record = signed("a", NOW)

    assert records.is_authentic(record, TRUST)
    assert record["key"] == b64(identity_of("a").public_key)
    assert {"key", "proof", "sig"} <= set(record)


def test_unsigned_record_is_not_authentic():
    assert not records.is_authentic(rec("a", NOW), TRUST)


@pytest.mark.parametrize("field, value", [
    ("url", "http://evil:8000"), ("worker_id", "b"), ("expires_at", NOW + 10_000),
    ("sequence", 10**15), ("issued_at", NOW + 1), ("idempotent", True), ("gpu_model", "H200"),
    ("gpu_free_bytes", 1), ("service", "other"), ("models", [["m", "chat", 0, "llm", 0]]),
])
def test_record_changed_after_signing_is_not_authentic(field, value):
    forged = {**signed("a", NOW), field: value}

    assert not records.is_authentic(forged, TRUST)


def test_record_signed_by_a_key_proven_under_another_secret_is_not_authentic():
    record = signed("a", NOW, trust=MeshTrust("o" * 32))

    assert records.is_authentic(record, MeshTrust("o" * 32))
    assert not records.is_authentic(record, TRUST)


def test_record_with_a_member_proof_but_signed_by_another_key_is_not_authentic():
    member, outsider = identity_of("a"), new_identity()
    record = records.sign(rec("a", NOW), outsider, TRUST.proof(member.public_key))

    assert not records.is_authentic({**record, "key": b64(member.public_key)}, TRUST)
    assert not records.is_authentic(record, TRUST)


@pytest.mark.parametrize("garbage", [None, 42, "record", [], {}, {"key": 1, "proof": 2, "sig": 3},
                                     {"key": "!!", "proof": "!!", "sig": "!!"}])
def test_garbage_is_not_authentic(garbage):
    assert records.is_authentic(garbage, TRUST) is False


def test_authentic_keeps_only_real_records_under_their_own_worker():
    real = signed("a", NOW)
    providers = {"a": real, "b": rec("b", NOW), "c": real, "d": {**signed("d", NOW), "url": "http://evil"}}

    assert records.authentic(providers, TRUST, KEY, NOW) == {"a": real}


# --- merge ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["old-then-new", "new-then-old"])
def test_newest_sequence_per_worker_wins_in_any_order(order):
    old, new = rec("a", NOW, url="http://old"), rec("a", NOW + 1, url="http://new")
    first, second = (old, new) if order == "old-then-new" else (new, old)

    merged = records.merge(records.merge({}, {"a": first}, NOW + 2), {"a": second}, NOW + 2)

    assert merged == {"a": new}


def test_two_workers_coexist():
    merged = records.merge({"a": signed("a", NOW)}, {"b": signed("b", NOW)}, NOW + 1)

    assert sorted(merged) == ["a", "b"]


def test_expired_records_are_dropped():
    merged = records.merge({"a": rec("a", NOW, ttl_s=10)}, {"b": rec("b", NOW, ttl_s=100)}, NOW + 10)

    assert list(merged) == ["b"]


def test_tombstone_removes_the_worker():
    live = rec("a", NOW)

    merged = records.merge({"a": live, "b": rec("b", NOW)}, {"a": records.tombstone(live, NOW + 1)}, NOW + 1)

    assert list(merged) == ["b"]


def test_tombstone_issued_in_the_same_millisecond_still_removes_the_worker():
    # Was a bug (records.tombstone): a withdraw in the same millisecond as the announce (or after
    # the clock stepped back) got the same sequence and was ignored.
    live = rec("a", NOW)

    merged = records.merge({"a": live}, {"a": records.tombstone(live, NOW)}, NOW)

    assert merged == {}


def test_limit_keeps_the_freshest_records():
    providers = {w: signed(w, NOW + i) for i, w in enumerate("abcde")}

    merged = records.merge({}, providers, NOW + 10, limit=3)

    assert sorted(merged) == ["c", "d", "e"]


def test_default_limit_drops_the_oldest_provider():
    providers = {f"w{i:02d}": signed(f"w{i:02d}", NOW + i) for i in range(records.MAX_PROVIDERS_PER_KEY + 1)}

    merged = records.merge({}, providers, NOW + 30)

    assert len(merged) == records.MAX_PROVIDERS_PER_KEY
    assert "w00" not in merged


def test_a_full_key_takes_a_fresher_newcomer():
    full = {w: signed(w, NOW + i) for i, w in enumerate("abc")}

    merged = records.merge(full, {"z": signed("z", NOW + 5)}, NOW + 10, limit=3)

    assert sorted(merged) == ["b", "c", "z"]


def test_a_signer_keeps_one_record_per_key_under_any_number_of_worker_ids():
    """A member's made-up worker ids, all signed with its one key, cannot crowd out the others."""
    crowd = {w: records.sign(rec(w, NOW + i), identity_of("m"), TRUST.proof(identity_of("m").public_key))
             for i, w in enumerate(["m1", "m2", "m3", "m4"])}

    merged = records.merge({"a": signed("a", NOW)}, crowd, NOW + 10, limit=3)

    assert sorted(merged) == ["a", "m4"]


def test_encode_decode_round_trip():
    providers = {"a": signed("a", NOW), "b": rec("b", NOW)}

    assert records.decode(records.encode(providers)) == providers
    assert records.decode(records.encode(providers).encode()) == providers


def test_signature_survives_the_round_trip():
    providers = {"a": signed("a", NOW)}

    assert records.authentic(records.decode(records.encode(providers)), TRUST, KEY, NOW) == providers


@pytest.mark.parametrize("garbage", [None, "", b"", "not json", "[1, 2]", "42", b"\xff\xfe"])
def test_decode_garbage_is_empty(garbage):
    assert records.decode(garbage) == {}


@pytest.mark.parametrize("value", [42, {"a": 1}])
def test_decode_a_value_of_another_type_is_empty(value):
    # BUG (records.py decode): Kademlia values arrive over UDP from any sender (msgpack, any type);
    # json.loads(42) raises TypeError, which decode does not catch. A peer answering FIND_VALUE
    # with a non-string value makes find_providers raise, so the lookup fails for everyone
    # (see tests/unit/dht/test_node.py::test_a_peer_answering_a_non_string_value_does_not_break_lookups).
    assert records.decode(value) == {}


def test_a_signed_record_is_compact():
    one = records.encode({"a": signed("a", NOW, gpu_model="NVIDIA H100 80GB HBM3", gpu_free_bytes=8 * 2**33)})

    assert len(one) < 600


def ca_signed(worker: str, ca: Ed25519PrivateKey, name: str = "gpu-box-07.lab", **kwargs) -> records.Record:
    node = identity_of(worker)
    proof = sign_ca_proof(ca, node.public_key, name, "ab" * 32, int(NOW) + 86400)
    return records.sign(rec(worker, NOW, **kwargs), node, proof)


def test_a_record_with_a_ca_proof_is_authentic_to_that_ca_only(tmp_path):
    ca, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    (tmp_path / OVERLAY_DIR).mkdir()
    (tmp_path / OVERLAY_DIR / MESH_FILE).write_text(json.dumps({"ca_public_key": ca.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()}))
    trust = MeshTrust(None, OverlayTrust(tmp_path), clock=lambda: NOW)

    assert records.is_authentic(ca_signed("a", ca), trust)
    assert not records.is_authentic(ca_signed("a", other), trust)
    assert not records.is_authentic(ca_signed("a", ca), TRUST)  # a secret-only node
    assert not records.is_authentic({**ca_signed("a", ca), "url": "http://evil:8000"}, trust)


def test_a_record_with_a_ca_proof_is_still_compact():
    # The CA proof is longer than the secret's HMAC (~120 bytes more, with a 14-letter name):
    # a key still holds 11 such providers within one rpcudp datagram.
    one = records.encode({"a": ca_signed("a", Ed25519PrivateKey.generate(), gpu_model="NVIDIA H100 80GB HBM3",
                                         gpu_free_bytes=8 * 2**33)})

    assert len(one) < 600
    assert records.VALUE_BUDGET_BYTES // len(one) >= 11


# --- storage ------------------------------------------------------------------------------------

def stored(storage: ProviderStorage) -> dict[str, records.Record]:
    return records.decode(storage.get(KEY))


def test_storage_merges_stores_of_two_workers_under_one_key():
    storage = ProviderStorage(TRUST)
    now = time.time()

    storage[KEY] = records.encode({"a": signed("a", now)})
    storage[KEY] = records.encode({"b": signed("b", now)})

    assert sorted(stored(storage)) == ["a", "b"]


def test_storage_keeps_newest_and_drops_tombstoned():
    storage = ProviderStorage(TRUST)
    now = time.time()
    live = signed("a", now - 5)
    node = identity_of("a")
    gone = records.sign(records.tombstone(live, now - 1), node, TRUST.proof(node.public_key))

    storage[KEY] = records.encode({"a": live, "b": signed("b", now - 5)})
    storage[KEY] = records.encode({"a": gone})

    assert list(stored(storage)) == ["b"]


def test_storage_drops_unsigned_records():
    storage = ProviderStorage(TRUST)
    now = time.time()

    storage[KEY] = records.encode({"a": rec("a", now), "b": signed("b", now)})

    assert list(stored(storage)) == ["b"]


def test_storage_drops_records_of_another_mesh():
    storage = ProviderStorage(TRUST)

    storage[KEY] = records.encode({"a": signed("a", time.time(), trust=MeshTrust("o" * 32))})

    assert stored(storage) == {}


def test_storage_rejects_a_forged_record_that_would_displace_a_real_one():
    storage = ProviderStorage(TRUST)
    real = signed("a", time.time())
    storage[KEY] = records.encode({"a": real})
    copied = {**real, "url": "http://evil:8000", "sequence": real["sequence"] + 1000}
    outsider = new_identity()
    foreign = records.sign({**rec("a", time.time(), url="http://evil:8000"), "sequence": real["sequence"] + 1000},
                           outsider, MeshTrust("o" * 32).proof(outsider.public_key))
    unsigned = {**rec("a", time.time(), url="http://evil:8000"), "sequence": real["sequence"] + 1000}

    for forged in (copied, foreign, unsigned):
        storage[KEY] = records.encode({"a": forged})

    assert stored(storage) == {"a": real}


def test_storage_rejects_a_real_record_filed_under_another_worker():
    storage = ProviderStorage(TRUST)
    real_a, real_b = signed("a", time.time()), signed("b", time.time() + 1)
    storage[KEY] = records.encode({"a": real_a})

    storage[KEY] = records.encode({"a": real_b})

    assert stored(storage) == {"a": real_a}


def test_storage_ignores_a_value_that_is_not_json():
    storage = ProviderStorage(TRUST)
    real = signed("a", time.time())
    storage[KEY] = records.encode({"a": real})

    storage[KEY] = "not json"

    assert stored(storage) == {"a": real}


def test_storage_keeps_the_freshest_past_the_limit():
    storage = ProviderStorage(TRUST)
    now = time.time()
    workers = [f"w{i:02d}" for i in range(records.MAX_PROVIDERS_PER_KEY + 2)]

    for i, worker in enumerate(workers):
        storage[KEY] = records.encode({worker: signed(worker, now - 30 + i)})

    assert sorted(stored(storage)) == workers[2:]


def test_record_count_counts_live_records_across_keys(monkeypatch):
    clock = [time.time()]
    monkeypatch.setattr(storage_module, "time", types.SimpleNamespace(time=lambda: clock[0]))
    storage = ProviderStorage(TRUST)
    now = clock[0]
    storage[digest("providers/x")] = records.encode({"a": signed("a", now, service="x"),
                                                     "b": signed("b", now, service="x")})
    storage[digest("providers/y")] = records.encode({"a": signed("a", now, service="y")})
    storage[digest("providers/z")] = records.encode({"c": signed("c", now, ttl_s=10, service="z")})
    clock[0] += 20

    assert storage.record_count() == 3


def test_record_count_of_empty_storage_is_zero():
    assert ProviderStorage(TRUST).record_count() == 0


# --- what the DHT accepts to store (issue 12, H3) ------------------------------------------------
# An outsider stored 1,784 junk keys of 7 KB for a week. Only providers/<service> keys are held,
# only with well-formed records signed by a member, each small, a key bounded.

def test_storage_takes_no_key_outside_providers():
    storage = ProviderStorage(TRUST)
    junk_key = digest("anything/at/all")

    dropped = storage.put(junk_key, records.encode({"a": signed("a", time.time())}))
    storage.put(digest("x"), "y" * 7000)
    storage.put(b"short", records.encode({"a": signed("a", time.time())}))
    storage.put(["not", "bytes"], "z")

    assert list(storage) == [] and list(dropped) == ["a"]


def test_storage_refuses_a_members_record_filed_under_another_service():
    storage = ProviderStorage(TRUST)
    echo = signed("a", time.time(), service="echo")

    assert storage.put(KEY, records.encode({"a": echo})) == {"a": echo}
    assert list(storage) == []
    storage.put(records.storage_key("echo"), records.encode({"a": echo}))
    assert records.decode(storage.get(records.storage_key("echo"))) == {"a": echo}


@pytest.mark.parametrize("change", [
    {"padding": "p" * 100},  # a field nobody signs: anyone could pad a member's record
    {"sequence": 1.5}, {"issued_at": "now"}, {"gpu_free_bytes": True}, {"idempotent": 1},
    {"models": [["m", "chat", 0, "llm"]]}, {"models": [["m", "chat", True, "llm", 0]]}, {"models": "m"},
])
def test_storage_refuses_a_record_that_is_not_exactly_a_record(change):
    storage = ProviderStorage(TRUST)
    node = identity_of("a")
    # signed after the change, so only the shape is wrong
    odd = records.sign({**rec("a", time.time()), **change}, node, TRUST.proof(node.public_key))

    assert storage.put(KEY, records.encode({"a": odd})) == {"a": odd}
    assert list(storage) == []


def test_a_catalog_record_carries_its_models_signed():
    models = [["smollm2", "chat", 8192, "llm-inference", 0], ["minilm", "embedding", 256, "rag-embeddings", 50]]
    record = signed("a", NOW, service="@models", models=models)

    assert record["models"] == models and records.is_authentic(record, TRUST)
    assert records.well_formed(record, records.storage_key("@models"), NOW)


def test_a_key_record_carries_its_keys_signed_and_refuses_a_mistyped_entry():
    entry = ["mk-0123456789ab", "ci", "x" * 43, 60, 0, "smollm2", 0, int(NOW), False]
    record = signed("a", NOW, service="@keys", keys=[entry])

    assert record["keys"] == [entry] and records.is_authentic(record, TRUST)
    assert records.well_formed(record, records.storage_key("@keys"), NOW)
    # `revoked` given as 0 (an int where a bool belongs), then a short entry: junk, not a key.
    for bad in ([*entry[:8], 0], entry[:8]):
        assert not records.well_formed(signed("a", NOW, service="@keys", keys=[bad]), records.storage_key("@keys"), NOW)


def test_storage_refuses_a_members_oversized_or_long_lived_record():
    storage = ProviderStorage(TRUST)
    now = time.time()
    huge = signed("a", now, model="m" * records.MAX_RECORD_BYTES)
    week = signed("b", now, ttl_s=7 * 86400)
    day = signed("c", now, ttl_s=86400)

    storage[KEY] = records.encode({"a": huge, "b": week, "c": day})

    assert stored(storage) == {"c": day}


def test_a_key_stays_within_its_budget_however_many_members_store():
    storage = ProviderStorage(TRUST)
    now = time.time()

    for i in range(40):
        storage[KEY] = records.encode({f"w{i:02d}": signed(f"w{i:02d}", now + i, model="x" * 600)})

    assert 0 < len(stored(storage)) <= records.MAX_PROVIDERS_PER_KEY
    assert len(storage.get(KEY)) <= records.VALUE_BUDGET_BYTES
    assert [key for key, _ in storage] == [KEY]


def test_a_key_whose_last_provider_withdrew_is_forgotten():
    storage = ProviderStorage(TRUST)
    now = time.time()
    live = signed("a", now - 5)
    node = identity_of("a")
    storage[KEY] = records.encode({"a": live})

    storage[KEY] = records.encode({"a": records.sign(records.tombstone(live, now), node,
                                                     TRUST.proof(node.public_key))})

    assert list(storage) == []
