"""deploy/prometheus: promtool accepts the rules and their unit tests, every alert links a
runbook section of docs/OPERATIONS.md, and the rules cover what the operators need."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.support import (
    DEPLOY,
    OPERATIONS,
    load_yaml,
    markdown_anchors,
    output,
    promtool,
    run,
)

PROMETHEUS = DEPLOY / "prometheus"
Rules = list[dict[str, Any]]


def test_rules_pass_promtool_check() -> None:
    result = run([promtool(), "check", "rules", str(PROMETHEUS / "alerts.yaml")])
    assert result.returncode == 0, output(result)


def test_rule_unit_tests_pass() -> None:
    result = run([promtool(), "test", "rules", "alerts_test.yaml"], cwd=PROMETHEUS)
    assert result.returncode == 0, output(result)


def test_compose_prometheus_config_is_valid() -> None:
    result = run([promtool(), "check", "config", str(PROMETHEUS / "prometheus.yml")])
    assert result.returncode == 0, output(result)


def test_every_alert_has_a_firing_unit_test(alerts: Rules) -> None:
    cases = load_yaml(PROMETHEUS / "alerts_test.yaml")["tests"]
    fired = {
        case["alertname"]
        for test in cases
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert {rule["alert"] for rule in alerts} <= fired


def test_every_alert_has_severity_summary_and_a_runbook_section(alerts: Rules) -> None:
    anchors = markdown_anchors(OPERATIONS.read_text())
    for rule in alerts:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "docs/OPERATIONS.md", rule["alert"]
        assert anchor == rule["alert"].lower()
        assert anchor in anchors, f"no section '{rule['alert']}' in docs/OPERATIONS.md"


@pytest.mark.parametrize(
    ("concern", "metric"),
    [
        ("terminal failure ratio", "sender_dispatch_terminal_failures_total"),
        ("terminal failure ratio", "sender_contacts_total"),
        ("retry surge", "sender_dispatch_retries_total"),
        ("dead-lettered pages", 'sender_pages_total{outcome="dead"}'),
        ("consumer down", 'up{job="sender"} == 0'),
        ("consumer not ready", "kube_pod_container_status_ready"),
        ("queue backlog", 'rabbitmq_queue_messages_ready{queue="campaign.pages"}'),
    ],
)
def test_an_alert_watches(alerts: Rules, concern: str, metric: str) -> None:
    assert any(metric in rule["expr"] for rule in alerts), concern
