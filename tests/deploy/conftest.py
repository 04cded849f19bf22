"""Fixtures of the deploy/ tests: the files under deploy/, parsed once per session."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from tests.deploy.support import DEPLOY, kustomize, load_yaml


@pytest.fixture(scope="session")
def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl not installed: cannot render deploy/k8s with kustomize")
    return found


@pytest.fixture(scope="session")
def rendered(kubectl: str) -> list[dict[str, Any]]:
    """The example overlay, rendered once per session."""
    return kustomize(kubectl, DEPLOY / "k8s" / "overlays" / "example")


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return load_yaml(DEPLOY / "compose.yaml")


@pytest.fixture(scope="session")
def alerts() -> list[dict[str, Any]]:
    """Every alerting rule of deploy/prometheus/alerts.yaml."""
    groups = load_yaml(DEPLOY / "prometheus" / "alerts.yaml")["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


@pytest.fixture(scope="session")
def dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana" / "sender.json").read_text())
