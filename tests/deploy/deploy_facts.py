"""What the deployment files must agree with, read from the code rather than repeated by hand:
the services, their settings (environment variable names, default ports), their consumer
groups and the topics each reads, and the bound on a service's shutdown."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices

from handoff_feedback.consumers import feedback_consumer
from handoff_feedback.settings import FeedbackSettings
from handoff_router.consumers import routing_consumer
from handoff_router.settings import RouterSettings
from handoff_runtime.cli import HTTP_DRAIN_S
from handoff_runtime.consumer import Consumer
from handoff_runtime.settings import ServiceSettings
from handoff_schemas.catalogue import SERVICES, TOPICS_BY_NAME
from handoff_scorer.consumers import leads
from handoff_scorer.settings import ScorerSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

SETTINGS: dict[str, type[ServiceSettings]] = {
    "scorer": ScorerSettings,
    "router": RouterSettings,
    "feedback": FeedbackSettings,
}
assert set(SETTINGS) == set(SERVICES)

WEBHOOK_SERVICES = ("scorer", "feedback")
"""The services that take signed webhooks (lead intake, status reports)."""

DB_DISPOSE_ALLOWANCE_S = 5.0
"""Closing the database pool at the end of shutdown is not bounded by a setting; allowed."""

SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|WEBHOOK_SOURCES|DATABASE_URL|CREDENTIAL|_KEY$")
"""Environment variables whose values are secrets: never written in a deployment file."""


def consumers(service: str) -> list[Consumer]:
    """The consumers a service's app starts (as its app.py builds them)."""
    if service == "scorer":
        return [leads]
    if service == "router":
        return [routing_consumer(RouterSettings())]
    if service == "feedback":
        return [feedback_consumer(FeedbackSettings().policy())]
    raise KeyError(service)


def consumer_groups(service: str) -> dict[str, set[str]]:
    """Kafka group id -> topics, for a service (ServiceRuntime names a group `handoff-<group>`)."""
    return {f"handoff-{c.group}": set(c.topics) for c in consumers(service)}


def partitions(topic: str) -> int:
    return TOPICS_BY_NAME[topic].partitions


def max_useful_replicas(service: str) -> int:
    """Replicas beyond the smallest partition count among the topics a service consumes sit
    idle on that topic."""
    return min(partitions(t) for topics in consumer_groups(service).values() for t in topics)


def default_port(service: str) -> int:
    port = SETTINGS[service].model_fields["port"].default
    assert isinstance(port, int)
    return port


def env_prefix(service: str) -> str:
    return str(SETTINGS[service].model_config.get("env_prefix", ""))


def env_names(service: str) -> set[str]:
    """Every environment variable the service's settings read."""
    cls = SETTINGS[service]
    names: set[str] = set()
    for field, info in cls.model_fields.items():
        if info.exclude:
            continue
        if isinstance(info.validation_alias, AliasChoices):
            names.update(str(choice) for choice in info.validation_alias.choices)
        elif isinstance(info.validation_alias, str):
            names.add(info.validation_alias)
        else:
            names.add(f"{env_prefix(service)}{field}".upper())
    return names


def worst_case_stop_s(service: str, kafka_timeout_s: float) -> float:
    """The longest a service takes from SIGTERM to exit (ServiceRuntime.stop): requests in
    flight, then each consumer group's last offset commit and leave (together), the relay's
    last publish and the producer's stop (each bounded by the Kafka timeout), then the
    database pool."""
    bounded_broker_calls = len(consumers(service)) + 2
    return HTTP_DRAIN_S + bounded_broker_calls * kafka_timeout_s + DB_DISPOSE_ALLOWANCE_S
