"""Tests for services.router.health.HealthDamper: hysteresis on health-check results."""

from __future__ import annotations

from services.router.health import HealthDamper


def feed(damper: HealthDamper, results: str) -> list[bool]:
    """results: '+' for a passing check, '-' for a failing one; returns observe()'s answers."""
    return [damper.observe(r == "+", "" if r == "+" else "boom") for r in results]


def test_unchecked_backend_counts_as_unhealthy():
    damper = HealthDamper(fail_threshold=3, ok_threshold=2)

    assert damper.healthy is False
    assert damper.last_error == "not checked yet"


def test_first_success_decides_alone():
    damper = HealthDamper(fail_threshold=3, ok_threshold=2)

    assert feed(damper, "+") == [True]
    assert damper.healthy is True


def test_first_failure_decides_alone_and_is_no_change():
    damper = HealthDamper(fail_threshold=3, ok_threshold=2)

    assert feed(damper, "-") == [False]
    assert damper.healthy is False
    assert damper.checked is True


def test_needs_fail_threshold_failures_in_a_row_to_go_unhealthy():
    damper = HealthDamper(fail_threshold=3, ok_threshold=2)

    assert feed(damper, "+---") == [True, False, False, True]
    assert damper.healthy is False


def test_needs_ok_threshold_successes_in_a_row_to_come_back():
    damper = HealthDamper(fail_threshold=1, ok_threshold=2)

    assert feed(damper, "+-++") == [True, True, False, True]
    assert damper.healthy is True


def test_success_in_a_failure_streak_resets_it():
    damper = HealthDamper(fail_threshold=3, ok_threshold=2)

    assert feed(damper, "+--+--") == [True, False, False, False, False, False]
    assert damper.healthy is True
    assert feed(damper, "-") == [True]
    assert damper.healthy is False


def test_failure_in_a_recovery_streak_resets_it():
    damper = HealthDamper(fail_threshold=1, ok_threshold=3)

    assert feed(damper, "-++-++") == [False] * 6
    assert damper.healthy is False
    assert feed(damper, "+") == [True]


def test_last_error_is_the_latest_failure_until_healthy_again():
    damper = HealthDamper(fail_threshold=3, ok_threshold=2)

    damper.observe(False, "connection refused")
    assert damper.last_error == "connection refused"
    damper.observe(False, "HTTP 503")
    assert damper.last_error == "HTTP 503"
    damper.observe(True)  # recovering, still unhealthy: the reason stays visible
    assert damper.healthy is False and damper.last_error == "HTTP 503"
    damper.observe(True)
    assert damper.healthy is True and damper.last_error == ""
