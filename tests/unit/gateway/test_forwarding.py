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
)

SECRET = "m" * 32
TRUST = MeshTrust(SECRET)
T0 = 1_700_000_000.0
TARGET = "/service/vision-ocr/v1/read?lang=en"


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> NodeIdentity:
    return NodeIdentity.load_or_create(tmp_path_factory.mktemp("node"))


def signed(node: NodeIdentity, body: bytes | None = b'{"x": 1}', trust: MeshTrust = TRUST,
           now: float = T0) -> dict[str, str]:
    return sign(node, trust.proof(node.public_key), "box-1", "POST", TARGET, body, now)


def accept(headers: dict[str, str], method: str = "POST", target: str = TARGET, now: float = T0,
           nonces: NonceCache | None = None) -> None:
    check(headers, method, target, TRUST, nonces if nonces is not None else NonceCache(), now)


def test_sign_then_check_passes(node):
    headers = signed(node)

    accept(headers)
    check_body(headers, b'{"x": 1}')


def test_signed_headers_carry_hop_sender_key_and_digest(node):
    headers = signed(node)

    assert set(headers) == set(forwarding.MESH_HEADERS)
    assert headers[HOP] == "1"
    assert headers[FROM] == "box-1"
    assert headers[KEY] == b64(node.public_key)
    assert headers[BODY] == hashlib.sha256(b'{"x": 1}').hexdigest()
    assert all(name == name.lower() for name in headers)  # as Starlette's request.headers gives them


def test_every_request_gets_a_fresh_nonce(node):
    assert signed(node)[NONCE] != signed(node)[NONCE]


@pytest.mark.parametrize("method, target", [("PUT", TARGET), ("POST", "/service/other"),
                                            ("POST", "/service/vision-ocr/v1/read?lang=de")])
def test_another_method_or_target_is_refused(node, method, target):
    with pytest.raises(Refused, match="signature"):
        accept(signed(node), method=method, target=target)


@pytest.mark.parametrize("header, value", [
    (BODY, hashlib.sha256(b"other").hexdigest()), (BODY, UNSIGNED_BODY), (TIME, f"{T0 + 1:.3f}"),
    (FROM, "box-2"), (NONCE, b64(b"n" * 16)),
])
def test_a_tampered_signed_header_is_refused(node, header, value):
    headers = {**signed(node), header: value}

    with pytest.raises(Refused, match="signature"):
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


def test_a_key_proven_under_another_secret_is_refused(node):
    with pytest.raises(Refused, match="not a member"):
        accept(signed(node, trust=MeshTrust("o" * 32)))


def test_a_member_proof_with_another_key_is_refused(node, tmp_path):
    outsider = NodeIdentity.load_or_create(tmp_path)
    headers = sign(outsider, TRUST.proof(node.public_key), "box-1", "POST", TARGET, b"", T0)

    with pytest.raises(Refused, match="not a member"):
        accept(headers)
    with pytest.raises(Refused, match="signature"):
        accept({**headers, KEY: b64(node.public_key)})


@pytest.mark.parametrize("missing", [FROM, KEY, PROOF, TIME, NONCE, BODY, SIGNATURE])
def test_a_missing_header_is_refused(node, missing):
    headers = signed(node)
    del headers[missing]

    with pytest.raises(Refused, match="every X-Mesh-"):
        accept(headers)


@pytest.mark.parametrize("header, value", [(TIME, "soon"), (KEY, "!!!"), (SIGNATURE, "a"), (PROOF, "ab=c")])
def test_a_malformed_header_is_refused(node, header, value):
    with pytest.raises(Refused):
        accept({**signed(node), header: value})


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
    return sign(node, proof, "node3", "POST", TARGET, b'{"x": 1}', T0)


def test_a_forward_with_the_mesh_cas_proof_is_accepted_without_a_secret(node, tmp_path):
    headers = ca_signed(node)

    check(headers, "POST", TARGET, ca_member_trust(tmp_path), NonceCache(), T0)
    assert len(headers[forwarding.PROOF]) > 43  # the header is the same, its value a CA proof


@pytest.mark.parametrize("case", ["another CA", "expired", "secret only"])
def test_a_forward_without_a_valid_ca_proof_is_refused_by_a_ca_only_gateway(node, tmp_path, case):
    headers = {"another CA": lambda: ca_signed(node, ca=Ed25519PrivateKey.generate()),
               "expired": lambda: ca_signed(node, expires_at=T0),
               "secret only": lambda: signed(node)}[case]()

    with pytest.raises(Refused, match="not a member"):
        check(headers, "POST", TARGET, ca_member_trust(tmp_path), NonceCache(), T0)


def test_a_ca_proof_moved_to_another_key_is_refused(node, tmp_path):
    outsider = NodeIdentity.load_or_create(tmp_path / "outsider")
    stolen = ca_signed(node)[forwarding.PROOF]
    headers = sign(outsider, identity.unb64(stolen), "node3", "POST", TARGET, b"", T0)

    with pytest.raises(Refused, match="not a member"):
        check(headers, "POST", TARGET, ca_member_trust(tmp_path), NonceCache(), T0)


def test_a_gateway_with_a_secret_and_a_ca_takes_either_proof(node, tmp_path):
    trust = ca_member_trust(tmp_path, SECRET)

    check(signed(node), "POST", TARGET, trust, NonceCache(), T0)
    check(ca_signed(node), "POST", TARGET, trust, NonceCache(), T0)
