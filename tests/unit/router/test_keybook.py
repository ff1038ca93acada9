"""The router's book of keys: its own entries survive a restart, others' come from the DHT."""

from __future__ import annotations

import pytest

from services.common import keys
from services.common.statefile import StateError
from services.router import keybook
from services.router.keybook import KeyBook, KeyBookError

NOW = 1_800_000_000


def test_a_key_made_here_is_in_force_and_survives_a_restart(tmp_path):
    book = KeyBook(tmp_path / keybook.FILE)
    key, token = book.create("ci", NOW, requests_per_minute=10)
    assert book.in_force(NOW) == (key,)
    assert KeyBook(tmp_path / keybook.FILE).in_force(NOW) == (key,)
    assert token not in (tmp_path / keybook.FILE).read_text()  # only what verifies it is kept
    assert (tmp_path / keybook.FILE).stat().st_mode & 0o777 == 0o600


def test_a_name_in_force_anywhere_is_refused(tmp_path):
    book = KeyBook(tmp_path / keybook.FILE)
    book.read([keys.make("ci", NOW)[0]])
    with pytest.raises(KeyBookError, match="in force already"):
        book.create("ci", NOW)


def test_revoking_a_key_another_node_made_publishes_its_revocation(tmp_path):
    book = KeyBook(tmp_path / keybook.FILE)
    theirs, _ = keys.make("theirs", NOW)
    assert book.read([theirs]) and not book.read([theirs])  # changed once
    assert book.revoke("theirs", NOW) == [theirs]
    assert book.own == [keys.revoked(theirs)] and book.in_force(NOW) == ()
    with pytest.raises(KeyBookError, match="no key named"):
        book.revoke("theirs", NOW)


def test_expired_entries_leave_the_book(tmp_path):
    book = KeyBook(tmp_path / keybook.FILE)
    book.create("brief", NOW, ttl_s=5)
    book.create("later", NOW + 10)
    assert [k.name for k in book.own] == ["later"]


def test_the_mesh_holds_what_its_records_can_carry(tmp_path):
    book = KeyBook(tmp_path / keybook.FILE)
    book.read([keys.make(f"k{i}", NOW)[0] for i in range(keybook.MAX_MESH_KEYS)])
    with pytest.raises(KeyBookError, match="revoke keys"):
        book.create("one-more", NOW)


def test_an_unreadable_book_names_its_file(tmp_path):
    (tmp_path / keybook.FILE).write_text("{not json")
    with pytest.raises(StateError, match="keys.json"):
        KeyBook(tmp_path / keybook.FILE)
