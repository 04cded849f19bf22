"""deploy/k8s: kustomize renders, core kinds pass strict schema validation, CRDs and the
Deployment carry the fields the consumer relies on."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import (
    DEPLOY,
    by_kind,
    kustomize,
    output,
    run,
    settings_names,
    venv_tool,
)

K8S = DEPLOY / "k8s"
CORE_API_VERSIONS = {"v1", "apps/v1", "policy/v1"}
SECRET_ENV = {"AMQP_URL", "REDIS_URL", "DATABASE_URL", "INBOX_API_URL", "INBOX_API_TOKEN"}
# Top-level spec fields of the CRDs (KEDA 2.x, prometheus-operator monitoring.coreos.com/v1).
CRD_SPEC_FIELDS = {
    "ScaledObject": {
        "scaleTargetRef",
        "pollingInterval",
        "cooldownPeriod",
        "initialCooldownPeriod",
        "idleReplicaCount",
        "minReplicaCount",
        "maxReplicaCount",
        "fallback",
        "advanced",
        "triggers",
    },
    "TriggerAuthentication": {
        "secretTargetRef",
        "env",
        "podIdentity",
        "hashiCorpVault",
        "azureKeyVault",
        "gcpSecretManager",
        "awsSecretManager",
        "configMapTargetRef",
        "boundServiceAccountToken",
    },
    "ServiceMonitor": {
        "selector",
        "endpoints",
        "namespaceSelector",
        "jobLabel",
        "targetLabels",
        "podTargetLabels",
        "sampleLimit",
        "scrapeProtocols",
        "attachMetadata",
    },
}

Resources = list[dict[str, Any]]


def _core(resources: Resources) -> Resources:
    return [r for r in resources if r["apiVersion"] in CORE_API_VERSIONS]


def _validate(tmp_path: Path, resources: Resources, *extra: str) -> Any:
    manifest = tmp_path / "core.yaml"
    manifest.write_text(yaml.safe_dump_all(resources))
    return run([venv_tool("kubernetes-validate"), "--strict", "--quiet", *extra, str(manifest)])


def _container(resources: Resources) -> dict[str, Any]:
    pod = by_kind(resources, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container


def _settings(resources: Resources) -> dict[str, str]:
    return by_kind(resources, "ConfigMap")["data"]


@pytest.mark.parametrize("directory", ["base", "overlays/example"])
def test_kustomize_renders_every_kind(kubectl: str, directory: str) -> None:
    kinds = {r["kind"] for r in kustomize(kubectl, K8S / directory)}
    assert kinds >= {
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "ScaledObject",
        "TriggerAuthentication",
        "ServiceMonitor",
    }


@pytest.mark.parametrize("version", [[], ["-k", "1.30"]], ids=["latest", "1.30"])
def test_core_kinds_pass_strict_validation(
    tmp_path: Path, rendered: Resources, version: list[str]
) -> None:
    core = _core(rendered)
    assert {r["kind"] for r in core} >= {"Deployment", "Service", "PodDisruptionBudget"}
    result = _validate(tmp_path, core, *version)
    assert result.returncode == 0, output(result)


def test_strict_validation_rejects_a_misspelled_field(tmp_path: Path, rendered: Resources) -> None:
    broken = copy.deepcopy(by_kind(rendered, "Deployment"))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    result = _validate(tmp_path, [broken])
    assert result.returncode != 0
    assert "readinesProbe" in output(result)


def test_probes_use_healthz_and_readyz_on_the_metrics_port(rendered: Resources) -> None:
    container = _container(rendered)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == int(_settings(rendered)["METRICS_PORT"]) == 9108


def test_termination_grace_outlasts_the_shutdown_drain(rendered: Resources) -> None:
    pod = by_kind(rendered, "Deployment")["spec"]["template"]["spec"]
    drain_s = float(_settings(rendered)["SHUTDOWN_GRACE_S"])
    assert drain_s >= 25
    assert pod["terminationGracePeriodSeconds"] > drain_s


def test_pod_runs_non_root_read_only_without_privileges(rendered: Resources) -> None:
    pod = by_kind(rendered, "Deployment")["spec"]["template"]["spec"]
    container = _container(rendered)
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume


def test_container_has_requests_and_limits(rendered: Resources) -> None:
    resources = _container(rendered)["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert "memory" in resources["limits"]


def test_settings_come_from_the_configmap_and_the_secret(rendered: Resources) -> None:
    container = _container(rendered)
    (from_configmap,) = container["envFrom"]
    assert (
        from_configmap["configMapRef"]["name"] == by_kind(rendered, "ConfigMap")["metadata"]["name"]
    )
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert set(secret_env) == SECRET_ENV
    assert {ref["name"] for ref in secret_env.values()} == {"sender-secrets"}
    configured = set(_settings(rendered)) | set(secret_env)
    assert configured <= settings_names(), configured - settings_names()
    assert not set(_settings(rendered)) & SECRET_ENV, "credentials belong in the Secret"


def test_example_overlay_sets_namespace_image_and_size(rendered: Resources) -> None:
    assert {r["metadata"].get("namespace") for r in rendered if r["kind"] != "Namespace"} == {
        by_kind(rendered, "Namespace")["metadata"]["name"]
    }
    assert _container(rendered)["image"] == "registry.example.com/sender:0.1.0"
    assert by_kind(rendered, "Deployment")["spec"]["replicas"] == 3
    assert _container(rendered)["resources"]["limits"]["memory"] == "768Mi"
    assert by_kind(rendered, "ScaledObject")["spec"]["minReplicaCount"] == 3


def test_service_and_pdb_select_the_deployment_pods(rendered: Resources) -> None:
    pod_labels = by_kind(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = by_kind(rendered, "Service")
    pdb = by_kind(rendered, "PodDisruptionBudget")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("metrics", 9108, "metrics")


# -- CRDs: kubernetes-validate has no schema for them, so check what they must carry ----


def test_scaled_object_scales_the_deployment_on_the_pages_queue(rendered: Resources) -> None:
    spec = by_kind(rendered, "ScaledObject")["spec"]
    assert spec["scaleTargetRef"]["name"] == by_kind(rendered, "Deployment")["metadata"]["name"]
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == _settings(rendered)["PAGES_QUEUE"]
    assert trigger["metadata"]["mode"] == "QueueLength"
    assert int(trigger["metadata"]["value"]) > 0
    auth = by_kind(rendered, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]


def test_trigger_authentication_takes_the_host_from_the_secret(rendered: Resources) -> None:
    (ref,) = by_kind(rendered, "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert ref == {"parameter": "host", "name": "sender-secrets", "key": "AMQP_URL"}


def test_service_monitor_scrapes_the_metrics_port(rendered: Resources) -> None:
    spec = by_kind(rendered, "ServiceMonitor")["spec"]
    service = by_kind(rendered, "Service")
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = spec["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")


@pytest.mark.parametrize("kind", sorted(CRD_SPEC_FIELDS))
def test_crd_specs_use_only_known_fields(rendered: Resources, kind: str) -> None:
    """The schema validator does not know CRDs: catch a misspelled field here."""
    assert set(by_kind(rendered, kind)["spec"]) <= CRD_SPEC_FIELDS[kind]


def test_keda_trigger_uses_only_known_fields(rendered: Resources) -> None:
    (trigger,) = by_kind(rendered, "ScaledObject")["spec"]["triggers"]
    known = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
    assert set(trigger) <= known
