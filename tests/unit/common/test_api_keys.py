"""API keys: the token verifies with the published key alone, and which keys are in force."""

from __future__ import annotations

import base64
import dataclasses

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.common import keys

NOW = 1_800_000_000


def public_key(key: keys.ApiKey) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(key.public_key + "="))


def test_a_token_names_its_key_and_verifies_with_the_published_key_only():
    key, secret = keys.make("ci", NOW, requests_per_minute=60, models=("smol",), ttl_s=3600)
    assert secret.startswith("mk-eyJ")  # says what it is; a JWT after it
    token = secret.removeprefix(keys.PREFIX)
    assert jwt.get_unverified_header(token)["kid"] == key.id and key.id.startswith("mk-")
    claims = jwt.decode(token, public_key(key), algorithms=["EdDSA"], issuer=keys.ISSUER,
                        options={"verify_exp": False, "verify_iat": False})
    assert claims == {"iss": "meshworker", "sub": "ci", "iat": NOW, "exp": NOW + 3600}
    other, _ = keys.make("ci", NOW)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, public_key(other), algorithms=["EdDSA"], options={"verify_exp": False})
    assert token not in repr(key) and key.public_key not in secret  # the key holds no secret


def test_a_key_without_expiry_has_no_exp_claim():
    _, secret = keys.make("forever", NOW)
    assert "exp" not in jwt.decode(secret.removeprefix(keys.PREFIX), options={"verify_signature": False})


@pytest.mark.parametrize("name", ["", "Upper", "has space", "x" * 49, "-leading"])
def test_names_that_are_not_names_are_refused(name):
    with pytest.raises(ValueError, match="not a key name"):
        keys.make(name, NOW)


def test_a_revocation_from_any_member_wins_and_expired_keys_are_out():
    live, _ = keys.make("live", NOW)
    revoked_elsewhere, _ = keys.make("gone", NOW)
    brief, _ = keys.make("brief", NOW, ttl_s=10)
    published = [live, revoked_elsewhere, brief, keys.revoked(revoked_elsewhere)]
    assert keys.in_force(published, NOW) == (brief, live)
    assert keys.in_force(reversed(published), NOW + 10) == (live,)


def test_a_key_kept_to_models_allows_them_by_id_or_alias():
    key = dataclasses.replace(keys.make("k", NOW)[0], models=("gpt-4o-mini",))
    assert key.allows(("smol", "gpt-4o-mini")) and not key.allows(("big",))
    assert keys.make("any", NOW)[0].allows(("big",))


def test_a_key_survives_the_record_entry_and_the_wire():
    key, _ = keys.make("ci", NOW, requests_per_minute=5, models=("a", "b"), ttl_s=60)
    for shown in (key, keys.revoked(key)):
        assert keys.from_pb(keys.entry_pb(keys.to_entry(keys.to_pb(shown)))) == shown
