"""Tests for services.common.identity (node key, mesh trust) and the mesh_secret config key."""

from __future__ import annotations

import stat
import types

import pytest

from services.common import identity
from services.common.config import MESH_SECRET_FILE, ConfigError, load
from services.common.identity import KEY_FILE, MeshTrust, NodeIdentity, StateError, mesh_trust, verify

SECRET = "s" * 32


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
    real = identity.Ed25519PrivateKey
    other: list[NodeIdentity] = []
    calls = []

    def generate():
        calls.append(1)
        if len(calls) == 1:
            other.append(NodeIdentity.load_or_create(tmp_path))
        return real.generate()

    monkeypatch.setattr(identity, "Ed25519PrivateKey",
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
        assert "=" not in identity.b64(data)
        assert identity.unb64(identity.b64(data)) == data


def test_new_mesh_secret_is_long_and_random():
    assert len(identity.new_mesh_secret()) >= 16
    assert identity.new_mesh_secret() != identity.new_mesh_secret()


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
