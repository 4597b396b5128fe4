"""deploy/compose, checked without a container engine: the file validates against the Compose
Specification schema, starts things in the right order, gives every service the settings it
needs (and only names it reads), takes secrets only from .env, and scrapes what the
monitoring expects. `docker compose config` runs too where the compose plugin is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_facts import (
    DEPLOY,
    REPO,
    SECRET_NAME,
    SERVICES,
    WEBHOOK_SERVICES,
    default_port,
    env_names,
    env_prefix,
    worst_case_stop_s,
)

from handoff_runtime.webhooks import WebhookSource

COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
SCHEMA = Path(__file__).with_name("compose-spec.json")

TEXT = COMPOSE_FILE.read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(TEXT)
SERVICES_IN_FILE: dict[str, Any] = COMPOSE["services"]
REQUIRED_VARIABLE = re.compile(r"\$\{(\w+):\?[^}]*\}")
ANY_VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def env_of(name: str) -> dict[str, str]:
    environment = SERVICES_IN_FILE[name].get("environment") or {}
    assert isinstance(environment, dict), f"{name}: environment as a mapping"
    return {str(k): str(v) for k, v in environment.items()}


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines; single-quoted values are literal (as compose reads them)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


# --- the file ---------------------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_spec_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert errors == []


def test_the_schema_catches_mistakes() -> None:
    """The vendored schema is strict enough to be worth running."""
    schema = json.loads(SCHEMA.read_text())
    broken = yaml.safe_load(TEXT)
    broken["services"]["scorer"]["healthcheck"]["intervall"] = "5s"
    broken["services"]["kafka"]["depends_on"] = {"postgres": {"condition": "service_done"}}
    errors = jsonschema.Draft201909Validator(schema).iter_errors(broken)
    paths = {tuple(error.absolute_path)[:3] for error in errors}
    assert paths == {("services", "scorer", "healthcheck"), ("services", "kafka", "depends_on")}


def test_docker_compose_config_accepts_it(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False, timeout=30
    )
    if probe.returncode != 0:
        pytest.skip("the docker client has no compose plugin (the schema test covers the file)")
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    done = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


# --- order ------------------------------------------------------------------------------------


def test_every_dependency_exists_and_waits_for_the_right_condition() -> None:
    for name, service in SERVICES_IN_FILE.items():
        depends = service.get("depends_on") or {}
        targets = depends if isinstance(depends, list) else list(depends)
        for target in targets:
            assert target in SERVICES_IN_FILE, f"{name} depends on unknown {target}"
    for name in ("init", *SERVICES):
        depends = SERVICES_IN_FILE[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["kafka"]["condition"] == "service_healthy"
    for name in SERVICES:
        condition = SERVICES_IN_FILE[name]["depends_on"]["init"]["condition"]
        assert condition == "service_completed_successfully"


def test_init_migrates_every_service_then_creates_the_topics() -> None:
    init = SERVICES_IN_FILE["init"]
    assert init["build"]["args"]["SERVICE"] == "all"
    assert init.get("restart") == "no"
    script = " ".join(init["command"])
    steps = [f"python -m handoff_{s} migrate" for s in SERVICES]
    steps.append("python -m handoff_runtime.topics create")
    positions = [script.index(step) for step in steps]
    assert positions == sorted(positions), "migrations, then topics"
    assert "-e" in init["command"][1], "the first failing step fails init"
    env = env_of("init")
    assert {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_REPLICATION_FACTOR"} <= set(env)


# --- images -----------------------------------------------------------------------------------


def test_every_built_service_uses_the_dockerfile_with_its_service() -> None:
    built = {n: s for n, s in SERVICES_IN_FILE.items() if "build" in s}
    assert set(built) == {*SERVICES, "init"}
    for name, service in built.items():
        build = service["build"]
        context = (COMPOSE_DIR / build["context"]).resolve()
        assert context == REPO
        assert (context / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        expected = "all" if name == "init" else name
        assert build["args"]["SERVICE"] == expected
        assert service["image"] == f"handoff-{expected}:local"


def test_third_party_images_are_pinned() -> None:
    for name, service in SERVICES_IN_FILE.items():
        if "build" in service:
            continue
        image = service["image"]
        assert ":" in image, f"{name}: pin {image}"
        assert not image.endswith(":latest"), f"{name}: pin {image}"
    assert SERVICES_IN_FILE["kafka"]["image"] == "apache/kafka:4.1.1"
    assert SERVICES_IN_FILE["postgres"]["image"] == "postgres:17"


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_service_gets_what_it_needs(service: str) -> None:
    env = env_of(service)
    prefix = env_prefix(service).upper()
    required = {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "HANDOFF_ADMIN_TOKEN"}
    if service in WEBHOOK_SERVICES:
        required.add(f"{prefix}WEBHOOK_SOURCES")
    assert required <= set(env)
    assert env[f"{prefix}HOST"] == "0.0.0.0"
    port = env[f"{prefix}PORT"]
    assert port == str(default_port(service))
    assert f"127.0.0.1:{port}:{port}" in SERVICES_IN_FILE[service]["ports"]
    assert f"127.0.0.1:{port}/readyz" in " ".join(SERVICES_IN_FILE[service]["healthcheck"]["test"])


@pytest.mark.parametrize("service", SERVICES)
def test_service_is_given_only_settings_it_reads(service: str) -> None:
    unknown = set(env_of(service)) - env_names(service)
    assert unknown == set(), f"{service} reads no such variable: {sorted(unknown)}"


def test_the_services_reach_the_broker_it_advertises() -> None:
    kafka = env_of("kafka")
    advertised: dict[str, str] = {}
    for entry in kafka["KAFKA_ADVERTISED_LISTENERS"].split(","):
        listener, address = entry.split("://", 1)
        advertised[address] = listener
    for name in (*SERVICES, "init"):
        assert env_of(name)["KAFKA_BOOTSTRAP_SERVERS"] in advertised
        assert advertised[env_of(name)["KAFKA_BOOTSTRAP_SERVERS"]] == "PLAINTEXT"


def test_kafka_runs_as_one_kraft_node() -> None:
    kafka = env_of("kafka")
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = kafka["KAFKA_NODE_ID"]
    voter_id, _, voter_address = kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert voter_id == node
    controller = kafka["KAFKA_CONTROLLER_LISTENER_NAMES"]
    listeners = dict(entry.split("://", 1) for entry in kafka["KAFKA_LISTENERS"].split(","))
    assert listeners[controller] == ":" + voter_address.split(":")[1]
    protocols = dict(e.split(":") for e in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", kafka["CLUSTER_ID"])
    for setting in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert kafka[setting] == "1", f"{setting}: one broker, one replica"
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics come from the plan"


@pytest.mark.parametrize("service", SERVICES)
def test_stop_grace_covers_the_bounded_shutdown(service: str) -> None:
    grace = SERVICES_IN_FILE[service]["stop_grace_period"]
    matched = re.fullmatch(r"(\d+)s", str(grace))
    assert matched, f"{service}: stop_grace_period in whole seconds, not {grace}"
    seconds = int(matched.group(1))
    timeout = float(env_of(service)[f"{env_prefix(service).upper()}KAFKA_TIMEOUT_S"])
    assert seconds > worst_case_stop_s(service, timeout)


# --- health and ports -------------------------------------------------------------------------


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in SERVICES_IN_FILE.items():
        if name == "init":
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test"), f"{name} has no healthcheck"


def test_published_ports_are_unique_and_local() -> None:
    seen: dict[str, str] = {}
    for name, service in SERVICES_IN_FILE.items():
        for mapping in service.get("ports") or []:
            host_ip, host_port, _ = str(mapping).split(":")
            assert host_ip == "127.0.0.1", f"{name}: publish on the loopback only"
            assert host_port not in seen, f"{name} and {seen.get(host_port)} share {host_port}"
            seen[host_port] = name


# --- secrets ----------------------------------------------------------------------------------


def test_no_secret_is_written_in_the_compose_file() -> None:
    for name, service in SERVICES_IN_FILE.items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert "${" in str(value), f"{name}.{key} must come from .env"
                # nothing but the interpolations and the URL's fixed parts
                literal = ANY_VARIABLE.sub("", str(value))
                assert not re.search(r"(?i)secret|whsec_|token", literal), f"{name}.{key}"
    assert "whsec_" not in TEXT
    assert "change-me" not in TEXT


def test_env_example_defines_every_variable_with_a_placeholder() -> None:
    example = parse_env_file(ENV_EXAMPLE)
    required = set(REQUIRED_VARIABLE.findall(TEXT))
    assert required, "secrets are required variables: ${NAME:?message}"
    assert required <= set(example), f"missing in .env.example: {required - set(example)}"
    for name in required:
        if SECRET_NAME.search(name):
            assert re.search(r"change-me|REPLACE", example[name]), f"{name}: obvious placeholder"


def test_env_example_webhook_sources_are_valid_so_a_first_run_starts() -> None:
    example = parse_env_file(ENV_EXAMPLE)
    for service in WEBHOOK_SERVICES:
        raw = example[f"{env_prefix(service).upper()}WEBHOOK_SOURCES"]
        for source in json.loads(raw).values():
            WebhookSource.model_validate(source)


def test_the_real_env_file_is_ignored() -> None:
    ignored = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "-q", "deploy/compose/.env"],
        check=False,
        timeout=30,
    )
    assert ignored.returncode == 0, "deploy/compose/.env must be git-ignored"


# --- monitoring -------------------------------------------------------------------------------


def _mounts(name: str) -> dict[str, Path]:
    mounts: dict[str, Path] = {}
    for volume in SERVICES_IN_FILE[name].get("volumes") or []:
        source, target = str(volume).split(":")[:2]
        if source.startswith("."):
            mounts[target] = (COMPOSE_DIR / source).resolve()
    return mounts


def test_prometheus_and_grafana_mount_files_that_exist() -> None:
    for name in ("prometheus", "grafana"):
        for target, source in _mounts(name).items():
            assert source.exists(), f"{name}: {source} (for {target}) does not exist"
    grafana = _mounts("grafana")
    assert grafana["/etc/grafana/provisioning"] == DEPLOY / "grafana" / "provisioning"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/handoff.yml").read_text())
    assert grafana[provider["providers"][0]["options"]["path"]] == DEPLOY / "grafana/dashboards"


def test_compose_prometheus_scrapes_the_services_with_the_shared_rules() -> None:
    mounts = _mounts("prometheus")
    config_path = mounts["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load(config_path.read_text())
    shared = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == shared["rule_files"]
    for rule_file in config["rule_files"]:
        assert mounts[f"/etc/prometheus/{rule_file}"] == DEPLOY / "prometheus" / rule_file
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {job["job_name"] for job in shared["scrape_configs"]}
    for service in SERVICES:
        (sd,) = jobs[f"handoff-{service}"]["dns_sd_configs"]
        assert sd["names"] == [service]
        assert sd["port"] == default_port(service)


def test_promtool_accepts_the_compose_prometheus_config(tmp_path: Path) -> None:
    promtool = REPO / ".tools" / "prometheus" / "usr" / "bin" / "promtool"
    if not promtool.exists():
        pytest.skip("promtool is not installed (make prometheus)")
    for source in _mounts("prometheus").values():
        if source.is_file():
            (tmp_path / source.name).write_text(source.read_text())
    done = subprocess.run(
        [str(promtool), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
