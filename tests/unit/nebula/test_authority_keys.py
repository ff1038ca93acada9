"""The CA holder's checks of what a joiner asks it to certify (services/nebula/authority/holder.py)."""

from __future__ import annotations

import pytest

from services.identity.node_key import b64
from services.nebula.authority.holder import check_identity_key
from services.nebula.overlay.state import EnrollmentError

DEGENERATE_KEY = bytes([1]) + bytes(31)  # the identity point: R = key, S = 0 "signs" anything


@pytest.mark.parametrize("key", [
    DEGENERATE_KEY, bytes(32), bytes([1]) + bytes(30) + b"\x80",
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    bytes.fromhex("ed" + "ff" * 31),
], ids=bytes.hex)
def test_enrollment_refuses_a_degenerate_identity_key(key):
    # L2 (issue 12): the CA certified "01 00…" as a node's identity key, and a forged
    # signature under it then passed a node's check.
    with pytest.raises(EnrollmentError, match="degenerate") as refused:
        check_identity_key(b64(key))
    assert refused.value.code == "bad_identity_key" and refused.value.status == 400


def test_enrollment_takes_a_real_identity_key():
    key = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")  # RFC 8032 test 1
    assert check_identity_key(b64(key)) == key
