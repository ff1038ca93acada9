"""Tests for services.dht.reach: which address a node advertises from what its peers see."""

from __future__ import annotations

import pytest

from services.dht.reach import choose_observed, usable

pytestmark = pytest.mark.timeout(10)


def test_the_address_most_peers_see_wins():
    answers = [("10.0.0.2", "10.0.0.1"), ("10.0.0.3", "10.0.0.1"), ("192.168.9.2", "192.168.9.1")]

    assert choose_observed(answers) == "10.0.0.1"


def test_no_answer_is_no_choice():
    assert choose_observed([]) is None


@pytest.mark.parametrize("seen", [None, 42, b"10.0.0.1", ["10.0.0.1"], "", "not-an-ip", "10.0.0.1:8468",
                                  "0.0.0.0", "::", "224.0.0.1", "ff02::1", "fe80::1"])
def test_answers_no_peer_could_send_to_are_not_used(seen):
    assert choose_observed([("10.0.0.2", seen)]) is None


def test_a_loopback_answer_from_a_peer_on_another_host_is_not_used():
    assert choose_observed([("10.0.0.2", "127.0.0.1")]) is None
    assert choose_observed([("10.0.0.2", "::1")]) is None


def test_loopback_answers_cannot_outvote_a_real_one():
    answers = [("10.0.0.2", "127.0.0.1"), ("10.0.0.3", "127.0.0.1"), ("10.0.0.4", "10.0.0.1")]

    assert choose_observed(answers) == "10.0.0.1"


def test_a_peer_on_loopback_may_see_loopback():
    assert choose_observed([("127.0.0.1", "127.0.0.1")]) == "127.0.0.1"
    assert choose_observed([("::1", "::1")]) == "::1"


def test_an_unparseable_peer_address_is_not_believed():
    assert choose_observed([("a-name", "10.0.0.1")]) is None


def test_a_tie_keeps_the_current_address():
    answers = [("10.0.0.2", "10.0.0.9"), ("192.168.9.2", "192.168.9.1")]

    assert choose_observed(answers, current="192.168.9.1") == "192.168.9.1"
    assert choose_observed(answers, current="10.0.0.9") == "10.0.0.9"


def test_a_tie_without_the_current_address_goes_to_the_numerically_lowest():
    answers = [("10.0.0.2", "10.0.0.10"), ("10.0.0.3", "10.0.0.9")]

    assert choose_observed(answers) == choose_observed(list(reversed(answers))) == "10.0.0.9"
    assert choose_observed(answers, current="172.16.0.1") == "10.0.0.9"


def test_ipv4_mapped_ipv6_answers_are_ipv4():
    assert usable("::ffff:10.0.0.2", "::ffff:10.0.0.1") == "10.0.0.1"
    assert choose_observed([("10.0.0.2", "::ffff:10.0.0.1"), ("10.0.0.3", "10.0.0.1")]) == "10.0.0.1"


def test_ipv6_answers_are_canonical():
    assert usable("2001:db8::2", "2001:DB8:0::1") == "2001:db8::1"
