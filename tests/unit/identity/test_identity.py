"""Tests for services.identity's node key, proofs and trust (secret and CA proofs) and the
mesh_secret config key."""

from __future__ import annotations

import base64
import json
import stat
import types

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common.config import MESH_SECRET_FILE, ConfigError, load
from services.common.statefile import StateError
from services.identity import node_key
from services.identity.node_key import KEY_FILE, NodeIdentity, b64, is_usable_key, unb64, verify
from services.identity.proofs import CaProof, check_ca_proof, proof_kind, sign_ca_proof
from services.identity.trust import (
    CA_PROOF_FILE,
    MESH_FILE,
    RECHECK_S,
    RECORD_FILE,
    MeshTrust,
    OverlayTrust,
    mesh_trust,
    new_mesh_secret,
)
from services.nebula.overlay import records
from services.nebula.overlay.state import NebulaPaths

SECRET = "s" * 32
T0 = 1_700_000_000.0
EXPIRES = int(T0) + 3600
FAR_FUTURE = 4_000_000_000
FINGERPRINT = "ab" * 32
CA_FINGERPRINT = "cd" * 32


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_is_created_once_and_reused(tmp_path):
    first = NodeIdentity.load_or_create(tmp_path / "state")
    stored = (tmp_path / "state" / KEY_FILE).read_bytes()

    again = NodeIdentity.load_or_create(tmp_path / "state")

    assert len(first.public_key) == 32
    assert again.public_key == first.public_key
    assert (tmp_path / "state" / KEY_FILE).read_bytes() == stored


def test_key_file_is_private_and_no_temporary_file_is_left(tmp_path):
    NodeIdentity.load_or_create(tmp_path)

    assert mode(tmp_path / KEY_FILE) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]


def test_two_state_dirs_have_different_keys(tmp_path):
    a = NodeIdentity.load_or_create(tmp_path / "a")
    b = NodeIdentity.load_or_create(tmp_path / "b")

    assert a.public_key != b.public_key


@pytest.mark.parametrize("content", [b"", b"short", b"x" * 64])
def test_corrupt_key_file_is_a_state_error_and_is_kept(tmp_path, content):
    (tmp_path / KEY_FILE).write_bytes(content)

    with pytest.raises(StateError, match=KEY_FILE):
        NodeIdentity.load_or_create(tmp_path)

    assert (tmp_path / KEY_FILE).read_bytes() == content


def test_key_file_is_private_even_over_a_leftover_temporary_file(tmp_path):
    # BUG (identity.py write_private, os.open(tmp, O_CREAT, 0o600)): the mode applies only when
    # the file is created; a node.key.tmp left with mode 0644 keeps it, and os.replace makes the
    # private key world-readable.
    leftover = tmp_path / (KEY_FILE + ".tmp")
    leftover.write_bytes(b"")
    leftover.chmod(0o644)

    NodeIdentity.load_or_create(tmp_path)

    assert mode(tmp_path / KEY_FILE) == 0o600


def test_two_processes_creating_the_key_at_once_get_the_same_identity(tmp_path, monkeypatch):
    # BUG (identity.py load_or_create): exists() then write is check-then-act. On a first start the
    # gateway and the dht both create the key; the one that writes last replaces the other's file,
    # so one process signs with a key the state directory no longer holds. Here the "other
    # process" creates its key between this one's exists() check and its write.
    real = node_key.Ed25519PrivateKey
    other: list[NodeIdentity] = []
    calls = []

    def generate():
        calls.append(1)
        if len(calls) == 1:
            other.append(NodeIdentity.load_or_create(tmp_path))
        return real.generate()

    monkeypatch.setattr(node_key, "Ed25519PrivateKey",
                        types.SimpleNamespace(generate=generate, from_private_bytes=real.from_private_bytes))

    mine = NodeIdentity.load_or_create(tmp_path)

    assert other[0].public_key == mine.public_key


def test_signature_verifies_and_tampering_fails(tmp_path):
    node = NodeIdentity.load_or_create(tmp_path)
    signature = node.sign(b"message")

    assert verify(node.public_key, signature, b"message")
    assert not verify(node.public_key, signature, b"messagE")
    assert not verify(node.public_key, bytes(64), b"message")
    assert not verify(NodeIdentity.load_or_create(tmp_path / "other").public_key, signature, b"message")


@pytest.mark.parametrize("key, signature", [(b"", b""), (b"x" * 31, b"s" * 64), (b"x" * 32, b"short")])
def test_verify_of_malformed_key_or_signature_is_false(key, signature):
    assert verify(key, signature, b"message") is False


# L2 (issue 12): the identity point "01 00…" was certified at enrollment, and a signature with
# R = that key and S = 0 then verified for any message. Every small-order key is refused.
DEGENERATE_KEY = bytes([1]) + bytes(31)


@pytest.mark.parametrize("key", [
    DEGENERATE_KEY, bytes(32),
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),  # order 8
    bytes.fromhex("ee" + "ff" * 30 + "7f"),  # p + 1: the identity again, not canonical
], ids=bytes.hex)
def test_a_forged_signature_under_a_small_order_key_does_not_verify(key):
    assert not verify(key, key + bytes(32), b"any message at all")
    assert not is_usable_key(key)
    assert not is_usable_key(key[:31] + bytes([key[31] | 0x80]))  # same point, sign bit set


def test_real_keys_are_usable(tmp_path):
    assert all(is_usable_key(NodeIdentity.load_or_create(tmp_path / str(i)).public_key)
               for i in range(20))


def test_proof_under_the_same_secret_is_trusted(tmp_path):
    key = NodeIdentity.load_or_create(tmp_path).public_key

    assert MeshTrust(SECRET).trusts(key, MeshTrust(SECRET).proof(key))


def test_proof_under_a_different_secret_is_refused(tmp_path):
    key = NodeIdentity.load_or_create(tmp_path).public_key

    assert not MeshTrust(SECRET).trusts(key, MeshTrust("t" * 32).proof(key))


def test_proof_of_another_key_is_refused(tmp_path):
    trust = MeshTrust(SECRET)
    mine = NodeIdentity.load_or_create(tmp_path / "a").public_key
    theirs = NodeIdentity.load_or_create(tmp_path / "b").public_key

    assert not trust.trusts(theirs, trust.proof(mine))
    assert not trust.trusts(theirs, b"")


def test_b64_round_trip_without_padding():
    for data in (b"", b"a", b"ab", b"abc", bytes(range(256))):
        assert "=" not in b64(data)
        assert unb64(b64(data)) == data


def test_new_mesh_secret_is_long_and_random():
    assert len(new_mesh_secret()) >= 16
    assert new_mesh_secret() != new_mesh_secret()


def test_mesh_trust_without_a_secret_names_mesh_secret(tmp_path):
    cfg = load({"MESHWORKER_STATE_DIR": str(tmp_path)})

    with pytest.raises(ConfigError) as caught:
        mesh_trust(cfg)

    assert caught.value.key == "mesh_secret"
    assert "mesh_secret" in str(caught.value)
    assert "MESHWORKER_MESH_SECRET" in str(caught.value)


def test_mesh_trust_uses_the_configured_secret(tmp_path):
    key = NodeIdentity.load_or_create(tmp_path).public_key
    cfg = load({"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_MESH_SECRET": SECRET})

    assert mesh_trust(cfg).trusts(key, MeshTrust(SECRET).proof(key))


def test_config_reads_the_mesh_secret_file(tmp_path):
    (tmp_path / MESH_SECRET_FILE).write_text("f" * 20 + "\n")

    assert load({"MESHWORKER_STATE_DIR": str(tmp_path)}).mesh_secret == "f" * 20


def test_env_mesh_secret_overrides_the_file_and_toml(tmp_path):
    (tmp_path / MESH_SECRET_FILE).write_text("f" * 20)
    (tmp_path / "meshworker.toml").write_text(f'mesh_secret = "{"t" * 20}"\n')
    env = {"MESHWORKER_STATE_DIR": str(tmp_path)}

    assert load(env).mesh_secret == "t" * 20
    assert load({**env, "MESHWORKER_MESH_SECRET": SECRET}).mesh_secret == SECRET


def test_no_secret_anywhere_is_none(tmp_path):
    assert load({"MESHWORKER_STATE_DIR": str(tmp_path)}).mesh_secret is None


def test_short_secret_names_the_key(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load({"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_MESH_SECRET": "short"})

    assert caught.value.key == "mesh_secret"
    assert "at least 16 characters" in str(caught.value)


def test_short_secret_file_names_the_file(tmp_path):
    (tmp_path / MESH_SECRET_FILE).write_text("short")

    with pytest.raises(ConfigError) as caught:
        load({"MESHWORKER_STATE_DIR": str(tmp_path)})

    assert MESH_SECRET_FILE in str(caught.value)
    assert "at least 16 characters" in str(caught.value)


# --- CA proofs ----------------------------------------------------------------------------------

def raw(public) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Overlay:
    """An overlay state directory as `init`/`join` leave it (mesh.json, record.json,
    identity.proof), with a CA key made here instead of by nebula-cert."""

    def __init__(self, state_dir, ca: Ed25519PrivateKey | None = None):
        self.state_dir = state_dir
        self.paths = NebulaPaths.of(state_dir)
        self.ca = ca or Ed25519PrivateKey.generate()
        seed = self.ca.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())
        body = base64.b64encode(seed + raw(self.ca.public_key())).decode()
        self.ca_pem = f"-----BEGIN NEBULA ED25519 PRIVATE KEY-----\n{body}\n-----END NEBULA ED25519 PRIVATE KEY-----\n"
        self.serial = 0

    def enroll(self, key: bytes | None = None, **proof) -> Overlay:
        """Write the membership and the record; with `key`, this node's proof of it."""
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.paths.mesh.write_text(json.dumps({"version": 1, "ca_public_key": raw(self.ca.public_key()).hex(),
                                               "ca_fingerprint": CA_FINGERPRINT, "overlay_ip": "10.42.0.2"}))
        self.publish()
        if key is not None:
            self.paths.identity_proof.write_bytes(self.certify(key, **proof))
        return self

    def publish(self, blocklist: tuple[str, ...] = ()) -> None:
        self.serial += 1
        record = records.MeshRecord(serial=self.serial, issued_at=int(T0), ca_fingerprint=CA_FINGERPRINT,
                                    blocklist=blocklist)
        self.paths.record.write_text(json.dumps({"version": 1, "signed": records.sign(record, self.ca_pem)}))

    def certify(self, key: bytes, name: str = "node2", fingerprint: str = FINGERPRINT,
                expires_at: int = EXPIRES) -> bytes:
        return sign_ca_proof(self.ca, key, name, fingerprint, expires_at)


def key_of(tmp_path, name: str) -> bytes:
    return NodeIdentity.load_or_create(tmp_path / name).public_key


def ca_trust(state_dir, secret: str | None = None, clock: Clock | None = None,
             monotonic: Clock | None = None) -> MeshTrust:
    return MeshTrust(secret, OverlayTrust(state_dir, monotonic=monotonic or Clock(0.0)), clock or Clock())


def test_a_ca_proof_round_trips_and_says_what_it_binds(tmp_path):
    ca, key = Ed25519PrivateKey.generate(), key_of(tmp_path, "a")
    blob = sign_ca_proof(ca, key, "node2", FINGERPRINT, EXPIRES)

    proof = check_ca_proof(raw(ca.public_key()), key, blob)

    assert (proof.name, proof.fingerprint, proof.expires_at) == ("node2", FINGERPRINT, EXPIRES)
    assert blob.startswith(b"ca1") and CaProof.decode(blob) == proof
    assert len(blob) == 3 + 8 + 32 + 1 + len("node2") + 64
    assert (proof_kind(blob), proof_kind(MeshTrust(SECRET).proof(key)), proof_kind(b"")) == ("ca", "secret", "none")


@pytest.mark.parametrize("args", [(b"k" * 31, "n", FINGERPRINT), (b"k" * 32, "n", "ab"), (b"k" * 32, "", FINGERPRINT)])
def test_a_ca_proof_needs_a_key_a_name_and_a_fingerprint(args):
    with pytest.raises(ValueError):
        sign_ca_proof(Ed25519PrivateKey.generate(), *args, EXPIRES)


def test_a_valid_ca_proof_is_trusted_without_any_secret(tmp_path):
    overlay = Overlay(tmp_path / "me").enroll()
    key = key_of(tmp_path, "peer")

    assert ca_trust(overlay.state_dir).trusts(key, overlay.certify(key))


def test_an_expired_ca_proof_is_refused(tmp_path):
    overlay = Overlay(tmp_path / "me").enroll()
    key = key_of(tmp_path, "peer")
    clock = Clock(EXPIRES - 1)
    trust = ca_trust(overlay.state_dir, clock=clock)

    assert trust.trusts(key, overlay.certify(key))
    clock.now = EXPIRES  # the verified proof is cached: its expiry still counts
    assert not trust.trusts(key, overlay.certify(key))
    assert not trust.trusts(key, overlay.certify(key, expires_at=int(T0) - 1))


@pytest.mark.parametrize("position", [3, 10, 11, 42, 43, 44, 48, -1])
def test_a_tampered_ca_proof_is_refused(tmp_path, position):
    overlay = Overlay(tmp_path / "me").enroll()
    key = key_of(tmp_path, "peer")
    blob = bytearray(overlay.certify(key))
    blob[position] ^= 0x01

    assert not ca_trust(overlay.state_dir).trusts(key, bytes(blob))


@pytest.mark.parametrize("mangle", [lambda b: b[:-1], lambda b: b + b"x", lambda b: b"ca2" + b[3:], lambda b: b[:32]])
def test_a_malformed_ca_proof_is_refused(tmp_path, mangle):
    overlay = Overlay(tmp_path / "me").enroll()
    key = key_of(tmp_path, "peer")

    assert not ca_trust(overlay.state_dir).trusts(key, mangle(overlay.certify(key)))


def test_a_proof_by_another_ca_is_refused(tmp_path):
    overlay, other = Overlay(tmp_path / "me").enroll(), Overlay(tmp_path / "other")
    key = key_of(tmp_path, "peer")

    assert not ca_trust(overlay.state_dir).trusts(key, other.certify(key))


def test_a_proof_of_another_key_is_refused(tmp_path):
    overlay = Overlay(tmp_path / "me").enroll()
    mine, theirs = key_of(tmp_path, "a"), key_of(tmp_path, "b")

    assert not ca_trust(overlay.state_dir).trusts(theirs, overlay.certify(mine))


def test_a_blocked_certificate_is_refused_once_the_record_says_so(tmp_path):
    overlay = Overlay(tmp_path / "me").enroll()
    key, monotonic = key_of(tmp_path, "peer"), Clock(0.0)
    trust = ca_trust(overlay.state_dir, monotonic=monotonic)
    assert trust.trusts(key, overlay.certify(key))

    overlay.publish(blocklist=(FINGERPRINT,))  # `meshworker revoke node2` reached this node
    monotonic.now = RECHECK_S

    assert not trust.trusts(key, overlay.certify(key))
    assert trust.trusts(key, overlay.certify(key, name="node3", fingerprint="ef" * 32))


def test_a_blocklist_not_signed_by_the_ca_is_ignored_and_the_previous_one_kept(tmp_path):
    overlay = Overlay(tmp_path / "me").enroll()
    overlay.publish(blocklist=(FINGERPRINT,))
    key, monotonic = key_of(tmp_path, "peer"), Clock(0.0)
    trust = ca_trust(overlay.state_dir, monotonic=monotonic)
    assert not trust.trusts(key, overlay.certify(key))

    forged = Overlay(tmp_path / "forger", Ed25519PrivateKey.generate())
    forged.paths.root.mkdir(parents=True)
    forged.publish(blocklist=())
    overlay.paths.record.write_text(forged.paths.record.read_text())
    monotonic.now = RECHECK_S

    assert not trust.trusts(key, overlay.certify(key))


def test_in_an_overlay_the_mesh_secret_vouches_for_nobody(tmp_path):
    """A node the CA revoked may still hold the mesh secret: in an overlay its secret proof
    is worth nothing, on any node, with or without the secret."""
    overlay = Overlay(tmp_path / "me").enroll()
    key = key_of(tmp_path, "peer")

    assert not ca_trust(overlay.state_dir, SECRET).trusts(key, MeshTrust(SECRET).proof(key))
    assert not ca_trust(overlay.state_dir).trusts(key, MeshTrust(SECRET).proof(key))
    assert ca_trust(overlay.state_dir, SECRET).trusts(key, overlay.certify(key))


def test_the_overlay_view_names_this_nodes_overlay_address(tmp_path):
    trust = OverlayTrust(tmp_path, monotonic=Clock(0.0))
    assert trust.view.address == "" and not trust.joined()

    Overlay(tmp_path).enroll()
    trust.refresh(force=True)

    assert trust.view.address == "10.42.0.2" and trust.joined()


def test_a_node_that_joins_an_overlay_stops_trusting_secret_proofs(tmp_path):
    key, monotonic = key_of(tmp_path, "peer"), Clock(0.0)
    trust = ca_trust(tmp_path / "me", SECRET, monotonic=monotonic)
    assert trust.trusts(key, MeshTrust(SECRET).proof(key))

    overlay = Overlay(tmp_path / "me").enroll()  # `meshworker join` while the node runs
    monotonic.now = RECHECK_S

    assert not trust.trusts(key, MeshTrust(SECRET).proof(key)) and trust.trusts(key, overlay.certify(key))


def test_without_an_overlay_no_ca_proof_is_trusted(tmp_path):
    key = key_of(tmp_path, "peer")
    proof = Overlay(tmp_path / "elsewhere").certify(key)

    assert not ca_trust(tmp_path / "me", SECRET).trusts(key, proof)
    assert not MeshTrust(SECRET).trusts(key, proof)


def test_mesh_trust_of_a_node_in_an_overlay_needs_no_secret(tmp_path):
    me = NodeIdentity.load_or_create(tmp_path)
    overlay = Overlay(tmp_path).enroll(me.public_key, expires_at=FAR_FUTURE)  # real clock here
    trust = mesh_trust(load({"MESHWORKER_STATE_DIR": str(tmp_path)}))
    peer = key_of(tmp_path, "peer")

    assert trust.proof(me.public_key) == overlay.paths.identity_proof.read_bytes()
    assert trust.trusts(me.public_key, trust.proof(me.public_key))
    assert trust.trusts(peer, overlay.certify(peer, expires_at=FAR_FUTURE)) and not trust.trusts(peer, MeshTrust(SECRET).proof(peer))


def test_the_own_proof_is_the_cas_when_there_is_one_else_the_secrets(tmp_path):
    me = NodeIdentity.load_or_create(tmp_path / "me")
    overlay = Overlay(tmp_path / "me").enroll(me.public_key)

    assert ca_trust(overlay.state_dir, SECRET).proof(me.public_key) == overlay.paths.identity_proof.read_bytes()
    other = key_of(tmp_path, "other")  # node.key replaced after the join: the CA's proof is not for it
    assert ca_trust(overlay.state_dir, SECRET).proof(other) == MeshTrust(SECRET).proof(other)
    assert ca_trust(overlay.state_dir).proof(other) == b""
    expired = ca_trust(overlay.state_dir, SECRET, clock=Clock(EXPIRES))
    assert expired.proof(me.public_key) == MeshTrust(SECRET).proof(me.public_key)


def test_a_join_while_running_is_picked_up_within_the_recheck_interval(tmp_path):
    me = NodeIdentity.load_or_create(tmp_path)
    monotonic = Clock(100.0)
    trust = MeshTrust(SECRET, OverlayTrust(tmp_path, monotonic=monotonic), Clock())
    peer = key_of(tmp_path, "peer")
    assert trust.proof(me.public_key) == MeshTrust(SECRET).proof(me.public_key)

    overlay = Overlay(tmp_path).enroll(me.public_key)  # `meshworker join` while the node runs
    assert proof_kind(trust.proof(me.public_key)) == "secret"  # not looked at again yet: no stat per call
    monotonic.now += RECHECK_S

    assert trust.proof(me.public_key) == overlay.paths.identity_proof.read_bytes()
    assert trust.trusts(peer, overlay.certify(peer))


def test_refresh_reads_a_change_at_once(tmp_path):
    me = NodeIdentity.load_or_create(tmp_path)
    trust = MeshTrust(SECRET, OverlayTrust(tmp_path, monotonic=Clock(100.0)), Clock())
    trust.proof(me.public_key)
    Overlay(tmp_path).enroll(me.public_key)

    trust.refresh()

    assert proof_kind(trust.proof(me.public_key)) == "ca"


@pytest.mark.parametrize("mesh", ["not json", '{"version": 1}', '{"ca_public_key": "abcd"}'])
def test_an_unusable_membership_trusts_no_ca_proof_and_does_not_raise(tmp_path, mesh):
    overlay = Overlay(tmp_path).enroll()
    overlay.paths.mesh.write_text(mesh)
    key = key_of(tmp_path, "peer")

    assert not ca_trust(tmp_path, SECRET).trusts(key, overlay.certify(key))
    assert ca_trust(tmp_path, SECRET).trusts(key, MeshTrust(SECRET).proof(key))


def test_nebula_paths_name_the_files_the_trust_reads(tmp_path):
    paths = NebulaPaths.of(tmp_path)

    assert paths.root == OverlayTrust(tmp_path).root
    assert (paths.mesh.name, paths.record.name, paths.identity_proof.name) == (
        MESH_FILE, RECORD_FILE, CA_PROOF_FILE)
