"""Configuration shared by every service, read from environment variables.

`DATABASE_URL`, `KAFKA_BOOTSTRAP_SERVERS`, `KAFKA_REPLICATION_FACTOR` and `HANDOFF_ADMIN_TOKEN`
are shared by all services and carry no per-service prefix (each names its variable in
`validation_alias`); everything else is prefixed per service (`HANDOFF_SCORER_`,
`HANDOFF_ROUTER_`, ...).
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import crashpoints
from .webhooks import WebhookSource


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclasses set `service_name` and their env prefix."""

    # Settings carry secrets (webhook secrets, passwords in DATABASE_URL): a settings error
    # names the field and the reason but does not echo the value.
    model_config = SettingsConfigDict(
        env_prefix="HANDOFF_", extra="ignore", hide_input_in_errors=True
    )

    service_name: str = Field(default="handoff", exclude=True)

    database_url: str = Field(
        default="postgresql://postgres@localhost:5432/handoff",
        validation_alias=AliasChoices("DATABASE_URL"),
        description="PostgreSQL URL; the service uses its own schema inside it.",
    )
    kafka_bootstrap_servers: str = Field(
        default="localhost:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS"),
        description="Comma-separated Kafka bootstrap servers.",
    )
    kafka_replication_factor: int = Field(
        default=1,
        ge=1,
        validation_alias=AliasChoices("KAFKA_REPLICATION_FACTOR"),
        description="Brokers each partition of a topic the service creates is kept on. "
        "Topics are normally created beforehand (`python -m handoff_runtime.topics create`); "
        "this applies to one a service finds missing at start-up.",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("HANDOFF_ADMIN_TOKEN"),
        description="Bearer token the admin APIs (teams, reps, routing rules, the ICP) require. "
        "Several, comma-separated, are accepted at once while one is rotated. Unset or empty: "
        "every admin call is refused.",
    )
    environment: Literal["development", "test", "production"] = Field(
        default="development",
        validation_alias=AliasChoices("HANDOFF_ENVIRONMENT"),
        description="Where the service runs; `production` refuses test-only hooks.",
    )
    crash_at: str | None = Field(
        default=None,
        validation_alias=AliasChoices("HANDOFF_CRASH_AT"),
        description="Test-only: kill the process at a named crash point (`<point>[:<n>]`, "
        "see handoff_runtime.crashpoints). Refused in production.",
    )
    broker_check_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often the service checks that the broker still holds its log (the "
        "broker epoch); a lost log is recreated and re-driven from the outbox.",
    )
    host: str = Field(default="127.0.0.1", description="HTTP bind address.")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port.")
    log_level: str = Field(default="INFO", description="Log level of the JSON logs.")

    db_pool_size: int = Field(default=10, ge=1, description="Connections in the DB pool.")
    kafka_timeout_s: float = Field(
        default=10.0, gt=0, description="Upper bound on any single broker call."
    )
    fetch_max_wait_ms: int = Field(
        default=50,
        ge=1,
        description="How long a fetch waits for data. The embedded broker does not wake a "
        "waiting fetch, so this is also the floor on consume latency.",
    )
    consumer_max_records: int = Field(
        default=500, ge=1, description="Records per consumed batch (one transaction each)."
    )
    consumer_commit_interval_ms: int = Field(
        default=1000,
        ge=0,
        description="How often a busy consumer commits its offsets (also when it falls idle, "
        "loses partitions or stops). Records after the last commit are delivered again after "
        "a crash and skipped as already processed; 0 commits after every batch.",
    )
    consumer_session_timeout_ms: int = Field(
        default=6000,
        ge=1000,
        description="Consumer group session timeout: how soon a dead member's partitions move.",
    )
    max_attempts: int = Field(
        default=3, ge=1, description="Attempts at one message before it is dead-lettered."
    )
    retry_backoff_ms: int = Field(
        default=100, ge=0, description="First retry delay; doubles with each attempt."
    )
    relay_batch_size: int = Field(default=500, ge=1, description="Outbox rows per publish.")
    relay_poll_interval_ms: int = Field(
        default=500,
        ge=10,
        description="Outbox poll interval; commits in this process wake the relay at once.",
    )
    outbox_retention_hours: float = Field(
        default=168,
        gt=0,
        description="How long published outbox rows are kept, to re-drive a broker that lost "
        "its log.",
    )
    webhook_sources: dict[str, WebhookSource] = Field(
        default_factory=dict,
        description="Who may post webhooks, as JSON: the source name (sent in the "
        "`webhook-source` header) and its Standard Webhooks secrets, e.g. "
        '`{"hubspot": {"secrets": ["whsec_..."]}, "demo": {"signed": false}}`. Several '
        "secrets verify at once while one is rotated.",
    )
    gc_threshold: int = Field(
        default=50_000,
        ge=0,
        description="Allocations between collections of the young generation of Python's "
        "cycle collector (CPython's default is 700); objects made at start-up are frozen out "
        "of its reach. 0 keeps CPython's defaults. See handoff_runtime/collector.py.",
    )
    max_body_bytes: int = Field(
        default=262144, ge=1, description="Largest webhook body accepted (bytes); larger is 413."
    )

    def admin_tokens(self) -> list[str]:
        """The admin tokens accepted now; empty when none is configured."""
        if self.admin_token is None:
            return []
        raw = self.admin_token.get_secret_value()
        return [token.strip() for token in raw.split(",") if token.strip()]

    @model_validator(mode="after")
    def _no_test_hooks_in_production(self) -> Self:
        if self.crash_at is not None:
            if self.environment == "production":
                raise ValueError(
                    "HANDOFF_CRASH_AT is a test-only hook and is refused in production"
                )
            crashpoints.parse(self.crash_at)
        return self
