"""Tests for services.gateway.forwarding: signed forwarding headers, window, replay, body digest."""

from __future__ import annotations

import hashlib

import pytest

from services.common.identity import MeshTrust, NodeIdentity, b64
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
