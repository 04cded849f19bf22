"""deploy/compose.yaml: valid against the compose specification, and wired as the
contract says (services, the 9108 metrics port, DESIGN.md §6 settings)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy.support import DEPLOY, ROOT, load_yaml, output, run, settings_names, venv_tool

Compose = dict[str, Any]
CONSUMERS = ("sender-1", "sender-2")
CONTRACT_ENV = {
    "AMQP_URL",
    "REDIS_URL",
    "DATABASE_URL",
    "INBOX_API_URL",
    "METRICS_PORT",
    "RUN_MODE",
}


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return float(match[1]) * (60 if match[2] == "m" else 1)


def test_compose_validates_against_the_compose_spec() -> None:
    result = run(
        [
            venv_tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(DEPLOY / "compose.yaml"),
        ]
    )
    assert result.returncode == 0, output(result)


def test_compose_names_every_service(compose: Compose) -> None:
    assert set(compose["services"]) == {
        "rabbitmq",
        "redis",
        "postgres",
        "fake-inbox",
        *CONSUMERS,
        "prometheus",
        "grafana",
    }


def test_plain_up_starts_only_what_the_tests_need(compose: Compose) -> None:
    """`make test` / `make demo` run `docker compose up -d`: no consumers competing for pages."""
    services = compose["services"]
    assert {name for name, s in services.items() if not s.get("profiles")} == {
        "rabbitmq",
        "redis",
        "postgres",
    }
    assert {p for s in services.values() for p in s.get("profiles", [])} == {"stack"}


def test_ports_are_published_on_loopback_with_the_default_urls(compose: Compose) -> None:
    services = compose["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
    assert "127.0.0.1:5672:5672" in services["rabbitmq"]["ports"]
    assert "127.0.0.1:6379:6379" in services["redis"]["ports"]
    assert "127.0.0.1:5432:5432" in services["postgres"]["ports"]


@pytest.mark.parametrize("name", CONSUMERS)
def test_consumer_is_built_from_the_dockerfile_with_the_contract_env(
    compose: Compose, name: str
) -> None:
    service = compose["services"][name]
    build = service["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    env = service["environment"]
    assert set(env) >= CONTRACT_ENV
    assert set(env) <= settings_names(), set(env) - settings_names()
    assert env["METRICS_PORT"] == "9108"
    assert any(port.endswith(":9108") for port in service["ports"])
    assert "/readyz" in " ".join(service["healthcheck"]["test"])
    assert _seconds(service["stop_grace_period"]) > float(env["SHUTDOWN_GRACE_S"])


@pytest.mark.parametrize("variable", ["AMQP_URL", "REDIS_URL", "DATABASE_URL", "INBOX_API_URL"])
def test_consumer_urls_point_at_compose_services(compose: Compose, variable: str) -> None:
    url = compose["services"]["sender-1"]["environment"][variable]
    assert urlsplit(url).hostname in compose["services"]


def test_inbox_url_targets_the_fake_inbox(compose: Compose) -> None:
    url = compose["services"]["sender-1"]["environment"]["INBOX_API_URL"]
    fake = compose["services"]["fake-inbox"]
    assert url == "http://fake-inbox:8080/inboxes/{inbox_id}/messages"
    assert fake["image"] == compose["services"]["sender-1"]["image"]
    assert fake["command"] == ["--host", "0.0.0.0", "--port", "8080"]


def test_prometheus_scrapes_both_consumers_and_loads_the_alerts(compose: Compose) -> None:
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "sender"]
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    assert targets == {f"{name}:9108" for name in CONSUMERS}
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert config["rule_files"] == ["alerts.yaml"]
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./prometheus/alerts.yaml:/etc/prometheus/alerts.yaml:ro" in mounts


def test_grafana_is_provisioned_with_the_dashboard(compose: Compose) -> None:
    mounts = compose["services"]["grafana"]["volumes"]
    assert "./grafana/sender.json:/var/lib/grafana/dashboards/sender.json:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "sender.yaml")
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_every_bind_mount_source_exists(compose: Compose) -> None:
    for service in compose["services"].values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            assert (DEPLOY / source).exists(), mount


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_fake_inbox_command_listens_on_every_interface(compose: Compose) -> None:
    """Other containers reach it by name, so it must not bind loopback only."""
    fake = compose["services"]["fake-inbox"]
    port = _free_port()
    argv = [*fake["entrypoint"], *fake["command"]]
    argv = [sys.executable if arg == "python" else arg for arg in argv]
    argv[argv.index("8080")] = str(port)
    with subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as server:
        try:
            assert server.stdout is not None
            banner = server.stdout.readline()
            assert f"http://0.0.0.0:{port}/" in banner, banner
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/inboxes/i-1/messages",
                data=b'{"contact_id": "c-1"}',
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
        finally:
            os.kill(server.pid, signal.SIGTERM)
            server.communicate(timeout=10)
