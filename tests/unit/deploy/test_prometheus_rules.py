"""deploy/prometheus: the alert rules pass promtool's checks and its unit tests (one or more
per alert, rules.test.yml), and the example configuration loads them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

PROMETHEUS = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"
RULES, TESTS, CONFIG = (PROMETHEUS / name for name in ("rules.yml", "rules.test.yml", "prometheus.yml"))


def promtool(*args: str) -> str:
    out = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
            if "alert" in rule]


def test_promtool_checks_the_rules():
    assert f"SUCCESS: {len(alerts())} rules found" in promtool("check", "rules", str(RULES))


def test_promtool_unit_tests_of_the_alerts_pass():
    assert "SUCCESS" in promtool("test", "rules", str(TESTS))


def test_the_example_config_is_valid_and_loads_the_rules():
    out = promtool("check", "config", str(CONFIG))

    assert "SUCCESS: 1 rule files found" in out and f"SUCCESS: {len(alerts())} rules found" in out


def test_every_alert_has_a_unit_test_in_which_it_fires_and_one_in_which_it_does_not():
    cases = [case for test in yaml.safe_load(TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    held = {case["alertname"] for case in cases if not case["exp_alerts"]}
    names = {rule["alert"] for rule in alerts()}

    assert fired == names
    # Alerts that fire on a single reading (no `for`, a threshold on a timestamp) are tested
    # with a fine series beside the one that fires instead.
    assert names - held == {"MeshworkerTlsCertificateExpiring", "MeshworkerOverlayCertificateExpiring"}


def test_every_alert_has_a_severity_a_summary_and_a_description():
    for rule in alerts():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"].keys() == {"summary", "description"}, rule["alert"]
