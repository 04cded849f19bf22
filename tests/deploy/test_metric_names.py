"""Every `sender_*` metric the alerts and the dashboard use is one the code exports.

The exported names come from `sender.metrics.Metrics` itself (every metric touched once,
then rendered with prometheus_client), so no service is needed.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client import Counter, Gauge, Histogram, generate_latest

from sender.runtime.metrics import Metrics
from tests.deploy.support import dashboard_exprs

_NAME = re.compile(r"\bsender_[a-z0-9_]+\b")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _exported() -> tuple[set[str], set[str]]:
    """(metric family names, sample names) that a consumer's /metrics shows."""
    metrics = Metrics("consumer")
    for attribute, metric in vars(metrics).items():
        if attribute.startswith("_") or not isinstance(metric, Counter | Gauge | Histogram):
            continue  # private attributes hold pre-bound children of the same metrics
        child = metric.labels(*("x" for _ in metric._labelnames))
        if isinstance(metric, Histogram):
            child.observe(0.1)
        else:
            child.inc()
    text = generate_latest(metrics.registry).decode()
    families = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))
    families = {f for f in families if not f.endswith("_created")}  # creation timestamps
    samples = set(re.findall(r"^(sender_\w+)[{ ]", text, flags=re.MULTILINE))
    return families, samples


def _family(name: str, families: set[str]) -> str:
    for suffix in _HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in families:
            return name.removesuffix(suffix)
    return name


def _used(alerts: list[dict[str, Any]], dashboard: dict[str, Any]) -> dict[str, set[str]]:
    return {
        "alerts.yaml": {n for rule in alerts for n in _NAME.findall(rule["expr"])},
        "sender.json": {n for expr in dashboard_exprs(dashboard) for n in _NAME.findall(expr)},
    }


@pytest.mark.parametrize("source", ["alerts.yaml", "sender.json"])
def test_every_metric_used_is_exported(
    alerts: list[dict[str, Any]], dashboard: dict[str, Any], source: str
) -> None:
    families, samples = _exported()
    used = _used(alerts, dashboard)[source]
    assert used, f"{source} names no sender_* metric"
    assert {_family(n, families) for n in used} <= families
    assert used <= samples, used - samples


def test_dashboard_shows_every_exported_metric(
    alerts: list[dict[str, Any]], dashboard: dict[str, Any]
) -> None:
    families, _ = _exported()
    used = _used(alerts, dashboard)["sender.json"]
    assert {_family(n, families) for n in used} == {f for f in families if f.startswith("sender_")}
