"""Client API keys of the mesh: made, published, and turned into what Envoy verifies. Pure.

Envoy checks a key itself, with no Python process on the request path, and the mesh
must never hold a key's secret. Envoy's api_key_auth filter compares plaintext, so
neither fits; its jwt_authn filter does both: a key is a JWT signed by an Ed25519 private
key made for that key alone and thrown away once the token is signed. The mesh keeps
the public key, which verifies the token and cannot make one (a stolen state file or
DHT record gives nobody a usable key, as a hash would not). The token's header names
the key (`kid`, shown by `meshworker keys list`); its `sub` claim is the key's name,
which Envoy copies into x-mesh-key for limits, model rules and usage.

Each node publishes the keys it made and revoked in one signed record under the DHT
name KEYS; a key is in force while some member lists it, no member lists it revoked,
and it has not expired.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common.rpc import dht_pb2

KEYS = "@keys"  # no service may take this name (config.SERVICE_NAME has no "@")
# Every key starts so (as OpenAI's start with "sk-"), which says what it is to a person or a
# secret scanner; Envoy reads the token after it (xds/auth.py).
PREFIX = "mk-"
ISSUER = "meshworker"
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,47}$")


@dataclass(frozen=True)
class ApiKey:
    id: str  # "mk-" + 12 hex digits, the token's kid
    name: str
    public_key: str  # Ed25519, base64url without padding (a JWK's "x")
    requests_per_minute: int = 0  # 0: no limit
    tokens_per_minute: int = 0
    models: tuple[str, ...] = ()  # ids or aliases; (): every model and service
    expires_at: int = 0  # Unix seconds; 0: never
    created_at: int = 0
    revoked: bool = False

    def expired(self, now: float) -> bool:
        return bool(self.expires_at) and self.expires_at <= now

    def allows(self, names: Iterable[str]) -> bool:
        """Whether a request for a model known by `names` (its id, its aliases) may use it."""
        return not self.models or any(n in self.models for n in names)


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise ValueError(f"{name!r} is not a key name (a-z, 0-9, '.', '_', '-', at most 48, "
                         "starting with a letter or digit)")
    return name


def make(name: str, now: float, requests_per_minute: int = 0, tokens_per_minute: int = 0,
         models: Iterable[str] = (), ttl_s: int = 0) -> tuple[ApiKey, str]:
    """A new key and its token (PREFIX, then a JWT): the secret, shown once and kept nowhere."""
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = ApiKey(id=f"mk-{secrets.token_hex(6)}", name=check_name(name),
                 public_key=base64.urlsafe_b64encode(public).rstrip(b"=").decode(),
                 requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute,
                 models=tuple(models), expires_at=int(now) + ttl_s if ttl_s else 0, created_at=int(now))
    claims = {"iss": ISSUER, "sub": key.name, "iat": key.created_at} | (
        {"exp": key.expires_at} if key.expires_at else {})
    return key, PREFIX + jwt.encode(claims, private, algorithm="EdDSA", headers={"kid": key.id})


def revoked(key: ApiKey) -> ApiKey:
    return replace(key, revoked=True)


def in_force(published: Iterable[ApiKey], now: float) -> tuple[ApiKey, ...]:
    """The keys Envoy accepts, by name: a revocation anywhere wins; expired keys are out."""
    by_id: dict[str, ApiKey] = {}
    for key in published:
        by_id[key.id] = key if key.revoked or key.id not in by_id else by_id[key.id]
    return tuple(sorted((k for k in by_id.values() if not k.revoked and not k.expired(now)),
                        key=lambda k: (k.name, k.id)))


def jwks(keys: Iterable[ApiKey]) -> dict:
    """The JSON Web Key Set of `keys` (RFC 8037's OKP keys), one per key, by its kid."""
    return {"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": k.id,
                      "x": k.public_key} for k in keys]}


def to_pb(key: ApiKey) -> dht_pb2.ApiKey:
    return dht_pb2.ApiKey(id=key.id, name=key.name, public_key=key.public_key,
                          requests_per_minute=key.requests_per_minute, tokens_per_minute=key.tokens_per_minute,
                          models=list(key.models), expires_at=key.expires_at, revoked=key.revoked,
                          created_at=key.created_at)


def from_pb(pb: dht_pb2.ApiKey) -> ApiKey:
    return ApiKey(id=pb.id, name=pb.name, public_key=pb.public_key, requests_per_minute=pb.requests_per_minute,
                  tokens_per_minute=pb.tokens_per_minute, models=tuple(pb.models), expires_at=pb.expires_at,
                  created_at=pb.created_at, revoked=pb.revoked)


# A key in a DHT record: [id, name, public_key, rpm, tpm, "model,model", expires_at, created_at, revoked]
ENTRY_TYPES = (str, str, str, int, int, str, int, int, bool)
# A key's use of a node in one minute, in a DHT record: [name, minute, requests, tokens]
WINDOW_TYPES = (str, int, int, int)


def to_entry(pb: dht_pb2.ApiKey) -> list:
    return [pb.id, pb.name, pb.public_key, pb.requests_per_minute, pb.tokens_per_minute, ",".join(pb.models),
            pb.expires_at, pb.created_at, pb.revoked]


def entry_pb(entry: list) -> dht_pb2.ApiKey:
    key_id, name, public_key, rpm, tpm, models, expires_at, created_at, was_revoked = entry
    return dht_pb2.ApiKey(id=key_id, name=name, public_key=public_key, requests_per_minute=rpm,
                          tokens_per_minute=tpm, models=[m for m in models.split(",") if m],
                          expires_at=expires_at, created_at=created_at, revoked=was_revoked)
