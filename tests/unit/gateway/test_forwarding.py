"""Tests for services.gateway.forwarding: signed forwarding headers, window, replay, body digest."""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common import identity
from services.common.identity import MeshTrust, NodeIdentity, OverlayTrust, b64, sign_ca_proof
from services.gateway import forwarding
from services.gateway.forwarding import (
    BODY,
    FROM,
    HOP,
    KEY,
    MAC,
    NONCE,
    PROOF,
    SIGNATURE,
    TIME,
    UNSIGNED_BODY,
    WINDOW_S,
    NonceCache,
    Refused,
    check,
    check_body,
    sign,
    sign_with_key,
)

SECRET = "m" * 32
TRUST = MeshTrust(SECRET)
T0 = 1_700_000_000.0
TARGET = "/service/vision-ocr/v1/read?lang=en"


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> NodeIdentity:
    return NodeIdentity.load_or_create(tmp_path_factory.mktemp("node"))


SCHEMES = ["mac", "key"]  # the mesh secret's MAC; a signature by a key with its proof
# What a refusal of an altered request says, by scheme.
MISMATCH = {"mac": "MAC does not match", "key": "signature does not match"}


def signed(node: NodeIdentity, body: bytes | None = b'{"x": 1}', trust: MeshTrust = TRUST,
           now: float = T0, scheme: str = "mac") -> dict[str, str]:
    """A forward by a node whose membership the secret proves: sent as such ("mac"), or
    signed with its key and the secret's proof of it, as a receiver still accepts ("key")."""
    if scheme == "mac":
        return sign(node, trust, "box-1", "POST", TARGET, body, now)
    return sign_with_key(node, trust.proof(node.public_key), "box-1", "POST", TARGET, body, now)


def accept(headers: dict[str, str], method: str = "POST", target: str = TARGET, now: float = T0,
           nonces: NonceCache | None = None) -> None:
    check(headers, method, target, TRUST, nonces if nonces is not None else NonceCache(), now)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_sign_then_check_passes(node, scheme):
    headers = signed(node, scheme=scheme)

    accept(headers)
    check_body(headers, b'{"x": 1}')


def test_a_node_the_secret_proves_sends_the_secrets_mac_not_its_key(node):
    headers = signed(node)

    assert set(headers) == set(forwarding.MAC_HEADERS)
    assert headers[HOP] == "1"
    assert headers[FROM] == "box-1"
    assert headers[BODY] == hashlib.sha256(b'{"x": 1}').hexdigest()
    assert all(name == name.lower() for name in headers)  # as Starlette's request.headers gives them


def test_key_signed_headers_carry_hop_sender_key_and_digest(node):
    headers = signed(node, scheme="key")

    assert set(headers) == set(forwarding.SIGNED_HEADERS)
    assert headers[KEY] == b64(node.public_key)
    assert headers[BODY] == hashlib.sha256(b'{"x": 1}').hexdigest()


def test_every_request_gets_a_fresh_nonce(node):
    assert signed(node)[NONCE] != signed(node)[NONCE]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("method, target", [("PUT", TARGET), ("POST", "/service/other"),
                                            ("POST", "/service/vision-ocr/v1/read?lang=de")])
def test_another_method_or_target_is_refused(node, method, target, scheme):
    with pytest.raises(Refused, match=MISMATCH[scheme]):
        accept(signed(node, scheme=scheme), method=method, target=target)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("header, value", [
    (BODY, hashlib.sha256(b"other").hexdigest()), (BODY, UNSIGNED_BODY), (TIME, f"{T0 + 1:.3f}"),
    (FROM, "box-2"), (NONCE, b64(b"n" * 16)),
])
def test_a_tampered_signed_header_is_refused(node, header, value, scheme):
    headers = {**signed(node, scheme=scheme), header: value}

    with pytest.raises(Refused, match=MISMATCH[scheme]):
        accept(headers)


@pytest.mark.parametrize("skew", [WINDOW_S + 1, -(WINDOW_S + 1), 3600])
def test_outside_the_window_is_refused(node, skew):
    with pytest.raises(Refused, match="old or early"):
        accept(signed(node), now=T0 + skew)


@pytest.mark.parametrize("skew", [WINDOW_S - 1, -(WINDOW_S - 1)])
def test_inside_the_window_passes(node, skew):
    accept(signed(node), now=T0 + skew)


def test_replay_is_refused(node):
    headers, nonces = signed(node), NonceCache()
    accept(headers, nonces=nonces)

    with pytest.raises(Refused, match="replay"):
        accept(dict(headers), now=T0 + 1, nonces=nonces)


def test_a_refused_forgery_does_not_burn_the_real_nonce(node):
    headers, nonces = signed(node), NonceCache()

    with pytest.raises(Refused):
        accept({**headers, FROM: "box-2"}, nonces=nonces)
    accept(headers, nonces=nonces)


def test_nonce_cache_forgets_nonces_older_than_twice_the_window():
    nonces = NonceCache({f"old-{i}": T0 for i in range(10_001)})

    assert nonces.first_sighting("new", T0 + 2 * WINDOW_S + 1)

    assert nonces.seen == {"new": T0 + 2 * WINDOW_S + 1}


def test_nonce_cache_keeps_recent_nonces_when_pruning():
    nonces = NonceCache({f"recent-{i}": T0 for i in range(10_001)})

    assert not nonces.first_sighting("recent-7", T0 + WINDOW_S)


def test_a_mac_under_another_secret_is_refused(node):
    with pytest.raises(Refused, match="not sent by a holder of this mesh's secret"):
        accept(signed(node, trust=MeshTrust("o" * 32)))


def test_a_key_proven_under_another_secret_is_refused(node):
    with pytest.raises(Refused, match="not a member"):
        accept(signed(node, trust=MeshTrust("o" * 32), scheme="key"))


def test_a_member_proof_with_another_key_is_refused(node, tmp_path):
    outsider = NodeIdentity.load_or_create(tmp_path)
    headers = sign_with_key(outsider, TRUST.proof(node.public_key), "box-1", "POST", TARGET, b"", T0)

    with pytest.raises(Refused, match="not a member"):
        accept(headers)
    with pytest.raises(Refused, match="signature"):
        accept({**headers, KEY: b64(node.public_key)})


@pytest.mark.parametrize("scheme, missing", [*(("key", h) for h in (FROM, KEY, PROOF, TIME, NONCE, BODY, SIGNATURE)),
                                             *(("mac", h) for h in (FROM, TIME, NONCE, BODY))])
def test_a_missing_header_is_refused(node, scheme, missing):
    headers = signed(node, scheme=scheme)
    del headers[missing]

    with pytest.raises(Refused, match="every X-Mesh-"):
        accept(headers)


@pytest.mark.parametrize("scheme, header, value", [
    ("key", TIME, "soon"), ("key", KEY, "!!!"), ("key", SIGNATURE, "a"), ("key", PROOF, "ab=c"),
    ("mac", TIME, "soon"), ("mac", MAC, "a"), ("mac", MAC, b64(b"m" * 32)),
])
def test_a_malformed_header_is_refused(node, scheme, header, value):
    with pytest.raises(Refused):
        accept({**signed(node, scheme=scheme), header: value})


def test_check_body_refuses_another_body(node):
    headers = signed(node)

    with pytest.raises(Refused, match="body"):
        check_body(headers, b'{"x": 2}')
    with pytest.raises(Refused, match="body"):
        check_body(headers, None)


def test_empty_body_is_digested_not_streamed(node):
    headers = signed(node, body=b"")

    assert headers[BODY] == hashlib.sha256(b"").hexdigest()
    check_body(headers, b"")
    with pytest.raises(Refused):
        check_body(headers, None)


def test_streamed_body_is_signed_as_such(node):
    headers = signed(node, body=None)

    assert headers[BODY] == UNSIGNED_BODY
    accept(headers)
    check_body(headers, None)
    with pytest.raises(Refused, match="body"):
        check_body(headers, b"anything")


def test_check_body_without_the_digest_header_is_refused():
    with pytest.raises(Refused):
        check_body({}, b"")
    with pytest.raises(Refused):
        check_body({}, None)


# --- members by the overlay CA's word -----------------------------------------------------------

CA = Ed25519PrivateKey.generate()


def ca_member_trust(state_dir, secret: str | None = None) -> MeshTrust:
    """A gateway in an overlay whose CA is CA (its membership file holds the CA's key)."""
    root = state_dir / identity.OVERLAY_DIR
    root.mkdir(parents=True, exist_ok=True)
    (root / identity.MESH_FILE).write_text(json.dumps({"ca_public_key": CA.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()}))
    return MeshTrust(secret, OverlayTrust(state_dir), clock=lambda: T0)


def ca_signed(node: NodeIdentity, ca: Ed25519PrivateKey = CA, expires_at: float = T0 + 60) -> dict[str, str]:
    proof = sign_ca_proof(ca, node.public_key, "node3", "ab" * 32, int(expires_at))
    return sign_with_key(node, proof, "node3", "POST", TARGET, b'{"x": 1}', T0)


def test_a_forward_with_the_mesh_cas_proof_is_accepted_without_a_secret(node, tmp_path):
    headers = ca_signed(node)

    check(headers, "POST", TARGET, ca_member_trust(tmp_path), NonceCache(), T0)
    assert len(headers[forwarding.PROOF]) > 43  # the header is the same, its value a CA proof


@pytest.mark.parametrize("case", ["another CA", "expired", "secret proof", "secret mac"])
def test_a_forward_without_a_valid_ca_proof_is_refused_by_a_ca_only_gateway(node, tmp_path, case):
    headers = {"another CA": lambda: ca_signed(node, ca=Ed25519PrivateKey.generate()),
               "expired": lambda: ca_signed(node, expires_at=T0),
               "secret proof": lambda: signed(node, scheme="key"),
               "secret mac": lambda: signed(node)}[case]()

    with pytest.raises(Refused, match="not a member|not sent by a holder"):
        check(headers, "POST", TARGET, ca_member_trust(tmp_path), NonceCache(), T0)


def test_a_ca_proof_moved_to_another_key_is_refused(node, tmp_path):
    outsider = NodeIdentity.load_or_create(tmp_path / "outsider")
    stolen = ca_signed(node)[forwarding.PROOF]
    headers = sign_with_key(outsider, identity.unb64(stolen), "node3", "POST", TARGET, b"", T0)

    with pytest.raises(Refused, match="not a member"):
        check(headers, "POST", TARGET, ca_member_trust(tmp_path), NonceCache(), T0)


def test_a_gateway_with_a_secret_and_a_ca_takes_either_proof(node, tmp_path):
    trust = ca_member_trust(tmp_path, SECRET)

    check(signed(node), "POST", TARGET, trust, NonceCache(), T0)
    check(ca_signed(node), "POST", TARGET, trust, NonceCache(), T0)


def test_a_node_the_ca_certified_signs_with_its_key_even_with_a_secret(node, tmp_path):
    sender = ca_member_trust(tmp_path / "sender", SECRET)
    proof = sign_ca_proof(CA, node.public_key, "node3", "ab" * 32, int(T0 + 60))
    (tmp_path / "sender" / identity.OVERLAY_DIR / identity.CA_PROOF_FILE).write_bytes(proof)

    headers = sign(node, sender, "node3", "POST", TARGET, b"", T0)

    assert set(headers) == set(forwarding.SIGNED_HEADERS) and identity.unb64(headers[PROOF]) == proof
    check(headers, "POST", TARGET, ca_member_trust(tmp_path / "receiver"), NonceCache(), T0)
