"""Join tokens: hashed, expiring, counted (pure), and their store on disk."""

from __future__ import annotations

import json

import pytest

from services.nebula.authority import tokens
from services.nebula.overlay.state import EnrollmentError, StateError

NOW = 1_800_000_000.0


def test_only_a_hash_is_stored():
    text, store = tokens.issue({}, 3600, 1, ["gpu"], False, NOW)

    assert text.split(".")[1] not in json.dumps(store)
    assert tokens.check(store, text, NOW)[1]["groups"] == ["gpu"]


@pytest.mark.parametrize("text", ["", "nonsense", "0000000a.00000000000000000000000000000000"])
def test_unknown_token(text):
    _, store = tokens.issue({}, 3600, 1, [], False, NOW)

    with pytest.raises(EnrollmentError, match="unknown token") as err:
        tokens.check(store, text, NOW)
    assert err.value.code == "unknown_token"


def test_right_id_wrong_secret_is_unknown():
    text, store = tokens.issue({}, 3600, 1, [], False, NOW)

    with pytest.raises(EnrollmentError, match="unknown token"):
        tokens.check(store, text[:-1] + ("0" if text[-1] != "0" else "1"), NOW)


def test_expired_token_says_so():
    text, store = tokens.issue({}, 60, 1, [], False, NOW)

    with pytest.raises(EnrollmentError, match="expired at") as err:
        tokens.check(store, text, NOW + 60)
    assert err.value.code == "token_expired"


def test_used_up_token_says_so():
    text, store = tokens.issue({}, 60, 2, [], False, NOW)
    for _ in range(2):
        token_id, _ = tokens.check(store, text, NOW)
        store = tokens.consume(store, token_id)

    with pytest.raises(EnrollmentError, match="used up") as err:
        tokens.check(store, text, NOW)
    assert err.value.code == "token_used_up"


@pytest.mark.parametrize("groups", [["lighthouse"], ["mesh"], ["../x"], ["UPPER"], ["a" * 40]])
def test_reserved_or_malformed_groups_are_refused(groups):
    with pytest.raises(ValueError):
        tokens.issue({}, 60, 1, groups, False, NOW)


def test_long_expired_tokens_are_forgotten():
    _, store = tokens.issue({}, 60, 1, [], False, NOW)
    _, store = tokens.issue(store, 60, 1, [], False, NOW + tokens.KEEP_EXPIRED_S + 61)

    assert len(store) == 1


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800)])
def test_durations(text, seconds):
    assert tokens.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "1w", "-5m", "h"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        tokens.parse_duration(text)


def test_store_round_trips_and_a_corrupt_one_is_a_clear_error(tmp_path):
    path = tmp_path / "tokens.json"
    _text, store = tokens.issue({}, 60, 1, [], False, NOW)
    tokens.save(path, store)
    assert tokens.load(path) == store

    path.write_text('{"version": 1, "tokens": ')
    with pytest.raises(StateError, match=r"tokens.json is corrupt"):
        tokens.load(path)
