"""deploy/k8s, rendered with tests/deploy/kustomize.py (base, the production overlay, and the
production overlay with the HPA fallback instead of KEDA) and checked offline: every resource
validates against the Kubernetes 1.33 API schemas (strict: unknown fields fail), KEDA's
ScaledObjects are checked field by field, and the invariants hold: the grace period covers
the preStop sleep and the bounded shutdown, no service scales past its topics' partitions,
every Deployment has its probes, resources and hardening, and secrets come only from the
Secret `handoff-secrets`, which is not in the manifests."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_facts import (
    DEPLOY,
    SECRET_NAME,
    SERVICES,
    WEBHOOK_SERVICES,
    consumer_groups,
    default_port,
    env_names,
    env_prefix,
    max_useful_replicas,
    partitions,
    worst_case_stop_s,
)
from kustomize import Resource, containers_of, pod_spec, render, split_image

K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.33"
SECRET = "handoff-secrets"
CONFIGMAP = "handoff-config"
README = DEPLOY / "README.md"


def render_with_hpa_fallback(tmp_path: Path) -> list[Resource]:
    """Production with components/hpa-fallback in place of components/keda."""
    overlay = yaml.safe_load((K8S / "overlays/production/kustomization.yaml").read_text())
    overlay["components"] = ["../../components/hpa-fallback"]
    target = tmp_path / "production-hpa"
    target.mkdir()
    production = K8S / "overlays" / "production"
    overlay["resources"] = [str(production / r) for r in overlay["resources"]]
    overlay["components"] = [str(production / c) for c in overlay["components"]]
    overlay["patches"] = [{"path": str(production / p["path"])} for p in overlay["patches"]]
    (target / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    return render(target)


RENDERS: dict[str, Callable[[Path], list[Resource]]] = {
    "base": lambda _: render(K8S / "base"),
    "production": lambda _: render(K8S / "overlays" / "production"),
    "production-hpa": render_with_hpa_fallback,
}


@pytest.fixture(params=sorted(RENDERS))
def rendered(request: pytest.FixtureRequest, tmp_path: Path) -> list[Resource]:
    return RENDERS[request.param](tmp_path)


def of_kind(resources: list[Resource], kind: str) -> dict[str, Resource]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def configmap(resources: list[Resource]) -> dict[str, str]:
    data = of_kind(resources, "ConfigMap")[CONFIGMAP]["data"]
    return {str(k): str(v) for k, v in data.items()}


def deployment_of(resources: list[Resource], service: str) -> Resource:
    return of_kind(resources, "Deployment")[f"handoff-{service}"]


def main_container(resources: list[Resource], service: str) -> dict[str, Any]:
    spec = pod_spec(deployment_of(resources, service))
    assert spec is not None
    (container,) = spec["containers"]
    assert container["name"] == service
    return container


# --- schemas ----------------------------------------------------------------------------------


def test_every_resource_validates_against_the_kubernetes_schemas(
    rendered: list[Resource],
) -> None:
    for resource in rendered:
        if resource["kind"] == "ScaledObject":
            continue  # a KEDA CRD: checked field by field below
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_strict_validation_catches_an_unknown_field() -> None:
    deployment = deployment_of(render(K8S / "base"), "scorer")
    spec = pod_spec(deployment)
    assert spec is not None
    spec["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_expected_resources_are_there(rendered: list[Resource]) -> None:
    names = {f"handoff-{s}" for s in SERVICES}
    assert set(of_kind(rendered, "Deployment")) == names
    assert set(of_kind(rendered, "Service")) == names
    assert set(of_kind(rendered, "PodDisruptionBudget")) == names
    assert set(of_kind(rendered, "Job")) == {"handoff-migrate"}
    assert set(of_kind(rendered, "ConfigMap")) == {CONFIGMAP}
    assert of_kind(rendered, "Secret") == {}, "secrets are never part of the manifests"
    for resource in rendered:
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == "handoff"
        assert resource["metadata"]["labels"]["app.kubernetes.io/part-of"] == "handoff"


# --- probes, resources, hardening, shutdown -----------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_deployment_probes(rendered: list[Resource], service: str) -> None:
    container = main_container(rendered, service)
    port = default_port(service)
    (declared,) = container["ports"]
    assert declared == {"name": "http", "containerPort": port, "protocol": "TCP"}
    assert configmap(rendered)[f"{env_prefix(service).upper()}PORT"] == str(port)
    expected = {
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
        "startupProbe": "/healthz",
    }
    for probe, path in expected.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    # /readyz asks the database and the broker, 2 s each
    assert container["readinessProbe"]["timeoutSeconds"] >= 5
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


@pytest.mark.parametrize("service", SERVICES)
def test_deployment_resources_and_hardening(rendered: list[Resource], service: str) -> None:
    deployment = deployment_of(rendered, service)
    spec = pod_spec(deployment)
    assert spec is not None
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in containers_of(deployment):
        for need in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][need]), need
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["runAsNonRoot"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}
        assert "/tmp" in mounts, "a writable /tmp on a read-only root"


@pytest.mark.parametrize("service", SERVICES)
def test_grace_period_covers_prestop_and_the_bounded_shutdown(
    rendered: list[Resource], service: str
) -> None:
    spec = pod_spec(deployment_of(rendered, service))
    assert spec is not None
    container = main_container(rendered, service)
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 3, "time for endpoints to drop the pod before SIGTERM"
    kafka_timeout = float(configmap(rendered)[f"{env_prefix(service).upper()}KAFKA_TIMEOUT_S"])
    worst = pre_stop + worst_case_stop_s(service, kafka_timeout)
    assert spec["terminationGracePeriodSeconds"] > worst, (
        f"{service}: grace {spec['terminationGracePeriodSeconds']} s <= preStop {pre_stop} s + "
        f"shutdown {worst - pre_stop} s"
    )


def test_configmap_comment_states_the_arithmetic_the_test_checks() -> None:
    text = (K8S / "base" / "configmap.yaml").read_text()
    resources = render(K8S / "base")
    for service in SERVICES:
        timeout = float(configmap(resources)[f"{env_prefix(service).upper()}KAFKA_TIMEOUT_S"])
        assert timeout == 5.0, "the comment's arithmetic assumes T = 5 s"
    worst = {5 + worst_case_stop_s(service, 5) for service in SERVICES}
    assert len(worst) == 1, "the comment states one worst case for every service"
    assert (
        f"each service: 5 (preStop) + 20 + 5 + 5 + 5 + 5 = {worst.pop():.0f} s < 60 s grace" in text
    )


# --- configuration and secrets -----------------------------------------------------------------


def _env_entries(resources: list[Resource]) -> Iterator[tuple[str, dict[str, Any]]]:
    for resource in resources:
        for container in containers_of(resource):
            for entry in container.get("env") or []:
                yield f"{resource['metadata']['name']}/{container['name']}", entry


def test_secrets_come_only_from_the_secret(rendered: list[Resource]) -> None:
    for where, entry in _env_entries(rendered):
        if SECRET_NAME.search(entry["name"]):
            assert "value" not in entry, f"{where}: {entry['name']} written in the manifest"
            assert entry["valueFrom"]["secretKeyRef"]["name"] == SECRET, where
        if "secretKeyRef" in entry.get("valueFrom", {}):
            assert entry["valueFrom"]["secretKeyRef"]["name"] == SECRET, where
    for key, value in configmap(rendered).items():
        assert not SECRET_NAME.search(key), f"{key} is a secret: put it in {SECRET}"
        assert "whsec_" not in value
        assert "@" not in value.split("//")[-1].split(",")[0]


def test_every_secret_key_is_documented(rendered: list[Resource]) -> None:
    keys = {
        entry["valueFrom"]["secretKeyRef"]["key"]
        for _, entry in _env_entries(rendered)
        if "secretKeyRef" in entry.get("valueFrom", {})
    }
    assert keys == {"database-url", "admin-token"} | {
        f"{s}-webhook-sources" for s in WEBHOOK_SERVICES
    }
    readme = README.read_text()
    assert re.search(r"kubectl (-n \S+ )?create secret generic handoff-secrets", readme)
    for key in keys:
        assert f"--from-literal={key}=" in readme or f"`{key}`" in readme, key


@pytest.mark.parametrize("service", SERVICES)
def test_deployment_env_names_are_settings_of_the_service(
    rendered: list[Resource], service: str
) -> None:
    container = main_container(rendered, service)
    assert container["envFrom"] == [{"configMapRef": {"name": CONFIGMAP}}]
    names = {e["name"] for e in container["env"]}
    prefix = env_prefix(service).upper()
    required = {"DATABASE_URL", "HANDOFF_ADMIN_TOKEN"}
    if service in WEBHOOK_SERVICES:
        required.add(f"{prefix}WEBHOOK_SOURCES")
    assert names == required
    every_service_reads = set().union(*(env_names(s) for s in SERVICES))
    unknown = set(configmap(rendered)) - every_service_reads
    assert unknown == set(), f"no service reads {sorted(unknown)}"


def test_replication_factor_matches_the_cluster() -> None:
    assert configmap(render(K8S / "base"))["KAFKA_REPLICATION_FACTOR"] == "1"
    production = configmap(render(K8S / "overlays" / "production"))
    brokers = production["KAFKA_BOOTSTRAP_SERVERS"].split(",")
    assert int(production["KAFKA_REPLICATION_FACTOR"]) == 3 <= len(brokers)


# --- services, disruption budgets --------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_service_and_budget_select_the_deployments_pods(
    rendered: list[Resource], service: str
) -> None:
    name = f"handoff-{service}"
    deployment = deployment_of(rendered, service)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    svc = of_kind(rendered, "Service")[name]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    (port,) = svc["spec"]["ports"]
    assert port["targetPort"] == "http"
    assert port["port"] == default_port(service)
    budget = of_kind(rendered, "PodDisruptionBudget")[name]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["maxUnavailable"] == 1


# --- the migration Job -------------------------------------------------------------------------


def test_job_migrates_every_service_then_creates_the_topics(rendered: list[Resource]) -> None:
    job = of_kind(rendered, "Job")["handoff-migrate"]
    spec = pod_spec(job)
    assert spec is not None
    assert spec["restartPolicy"] == "Never"
    inits = spec["initContainers"]
    assert [c["name"] for c in inits] == [f"migrate-{s}" for s in SERVICES]
    for service, container in zip(SERVICES, inits, strict=True):
        assert container["args"] == ["migrate"]
        assert container["image"] == main_container(rendered, service)["image"]
        assert {e["name"] for e in container["env"]} == {"DATABASE_URL"}
    (topics,) = spec["containers"]
    assert topics["command"] == ["python", "-m", "handoff_runtime.topics"]
    assert topics["args"][0] == "create"
    assert topics["envFrom"] == [{"configMapRef": {"name": CONFIGMAP}}]
    assert (
        split_image(topics["image"])[0]
        == split_image(main_container(rendered, "scorer")["image"])[0]
    )


# --- autoscaling -------------------------------------------------------------------------------


def _targets(resources: list[Resource]) -> list[str]:
    targets = [
        r["spec"]["scaleTargetRef"]["name"] for r in of_kind(resources, "ScaledObject").values()
    ]
    targets += [
        r["spec"]["scaleTargetRef"]["name"]
        for r in of_kind(resources, "HorizontalPodAutoscaler").values()
    ]
    return targets


def test_no_deployment_has_two_autoscalers(rendered: list[Resource]) -> None:
    targets = _targets(rendered)
    assert len(targets) == len(set(targets)), "KEDA's HPA and another HPA would fight"


def test_base_has_no_autoscaling_and_overlays_scale_every_service(tmp_path: Path) -> None:
    assert _targets(render(K8S / "base")) == []
    every = sorted(f"handoff-{s}" for s in SERVICES)
    assert sorted(_targets(RENDERS["production"](tmp_path))) == every
    assert sorted(_targets(RENDERS["production-hpa"](tmp_path))) == every


def test_scaled_objects(rendered: list[Resource]) -> None:
    for name, scaled in of_kind(rendered, "ScaledObject").items():
        assert scaled["apiVersion"] == "keda.sh/v1alpha1"
        service = name.removeprefix("handoff-")
        spec = scaled["spec"]
        assert spec["scaleTargetRef"] == {"name": name}
        assert name in of_kind(rendered, "Deployment")
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["maxReplicaCount"] <= max_useful_replicas(service)
        groups = consumer_groups(service)
        covered: set[tuple[str, str]] = set()
        for trigger in spec["triggers"]:
            metadata = trigger["metadata"]
            assert all(isinstance(v, str) for v in metadata.values()), "KEDA takes strings"
            if trigger["type"] == "cpu":
                assert trigger["metricType"] == "Utilization"
                assert 0 < int(metadata["value"]) <= 100
                continue
            assert trigger["type"] == "kafka"
            assert metadata["bootstrapServersFromEnv"] == "KAFKA_BOOTSTRAP_SERVERS"
            group, topic = metadata["consumerGroup"], metadata["topic"]
            assert topic in groups.get(group, set()), f"{name}: {group} does not read {topic}"
            assert spec["maxReplicaCount"] <= partitions(topic)
            assert int(metadata["lagThreshold"]) > 0
            assert metadata["offsetResetPolicy"] == "earliest", "as the consumers start"
            assert metadata["allowIdleConsumers"] == "false"
            covered.add((group, topic))
        expected = {(g, t) for g, topics in groups.items() for t in topics}
        assert covered == expected, f"{name}: lag of every group on every topic it reads"


def test_hpa_fallback_respects_partitions(tmp_path: Path) -> None:
    for name, hpa in of_kind(
        RENDERS["production-hpa"](tmp_path), "HorizontalPodAutoscaler"
    ).items():
        service = name.removeprefix("handoff-")
        spec = hpa["spec"]
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"] <= max_useful_replicas(service)
        assert spec["metrics"][0]["resource"]["name"] == "cpu"


def test_replicas_never_exceed_partitions(rendered: list[Resource]) -> None:
    for service in SERVICES:
        replicas = deployment_of(rendered, service)["spec"]["replicas"]
        assert 1 <= replicas <= max_useful_replicas(service)


# --- production --------------------------------------------------------------------------------


def test_production_pins_released_images_and_raises_resources() -> None:
    base = render(K8S / "base")
    production = render(K8S / "overlays" / "production")
    for service in SERVICES:
        image = main_container(production, service)["image"]
        name, tag, _ = split_image(image)
        assert name.endswith(f"/handoff/{service}")
        assert tag
        assert tag != "latest"
        assert re.fullmatch(r"\d+\.\d+\.\d+", tag)
        assert deployment_of(production, service)["spec"]["replicas"] >= 2
        small = main_container(base, service)["resources"]["requests"]["memory"]
        large = main_container(production, service)["resources"]["requests"]["memory"]
        assert _mebibytes(large) > _mebibytes(small)
        # the patch changed resources only: probes and hardening are the base's
        for key in ("readinessProbe", "livenessProbe", "startupProbe", "securityContext", "env"):
            assert main_container(production, service)[key] == main_container(base, service)[key]
    for resource in production:
        for container in containers_of(resource):
            assert container["image"].startswith("registry.example.com/"), container["name"]


def _mebibytes(quantity: str) -> float:
    matched = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi)", quantity)
    assert matched, f"memory in Mi or Gi, not {quantity}"
    number, unit = matched.groups()
    return float(number) * (1024 if unit == "Gi" else 1)
