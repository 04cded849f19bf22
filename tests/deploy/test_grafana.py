"""deploy/grafana/sender.json: the panels operators need, valid PromQL, one data source."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import DEPLOY, dashboard_exprs, load_yaml, output, promtool, run

Dashboard = dict[str, Any]

# Grafana's variables, replaced by values promtool can parse.
_VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$mode": ".*", "$instance": ".*"}


def _panel_exprs(dashboard: Dashboard) -> dict[str, str]:
    return {
        p["title"]: " ".join(t["expr"] for t in p["targets"])
        for p in dashboard["panels"]
        if p.get("targets")
    }


@pytest.mark.parametrize(
    ("title", "needs"),
    [
        ("Throughput", r"sum by \(outcome\) \(rate\(sender_contacts_total"),
        ("Outcomes by reason", r"sum by \(reason\) \(rate\(sender_dispatch_terminal_failures"),
        ("Retries by attempt", r"sum by \(attempt\) \(rate\(sender_dispatch_retries_total"),
        (
            "Attempt latency",
            r"histogram_quantile\(0\.99, .*sender_dispatch_duration_seconds_bucket",
        ),
        ("Rate-limit token wait", r"histogram_quantile\(.*sender_rate_limit_wait_seconds_bucket"),
        ("Contacts in flight", r"sender_contacts_in_flight"),
        ("Pages by outcome", r"sum by \(outcome\) \(rate\(sender_pages_total"),
        ("Dead pages", r'sender_pages_total\{[^}]*outcome="dead"'),
    ],
)
def test_dashboard_has_the_panel(dashboard: Dashboard, title: str, needs: str) -> None:
    panels = _panel_exprs(dashboard)
    matching = [t for t in panels if t.startswith(title)]
    assert matching, f"no panel titled {title!r}"
    assert re.search(needs, panels[matching[0]]), panels[matching[0]]


def test_panels_have_unique_ids_and_use_the_datasource_variable(dashboard: Dashboard) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_datasource_variable_defaults_to_the_provisioned_prometheus(dashboard: Dashboard) -> None:
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    provisioned = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")
    (source,) = provisioned["datasources"]
    assert variable["current"]["value"] == source["uid"]
    assert source["url"] == "http://prometheus:9090"


def test_every_dashboard_query_is_valid_promql(dashboard: Dashboard, tmp_path: Path) -> None:
    exprs = dashboard_exprs(dashboard)
    for name, value in _VARIABLES.items():
        exprs = [expr.replace(name, value) for expr in exprs]
    assert not [e for e in exprs if "$" in e], "a Grafana variable is not substituted"
    rules = [{"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run([promtool(), "check", "rules", str(path)])
    assert result.returncode == 0, output(result)
