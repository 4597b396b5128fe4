"""The tables the code reads and writes are the tables the migrations create: for each
service, Alembic's autogenerate comparison of its models (and the runtime's tables it uses)
with a database migrated to head finds nothing to change. A model that drifts from its
migrations (a column type, a nullable flag, an index or a unique constraint) fails here,
before an ORM query meets a schema it does not expect."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel
from support.infra import Infra, service_database

import handoff_feedback.kpi_models
import handoff_feedback.models
import handoff_router.models
import handoff_scorer.models
from handoff_runtime.db import async_url
from handoff_runtime.tables import RuntimeTables

pytestmark = pytest.mark.integration

MODELS = {
    "scorer": [handoff_scorer.models],
    "router": [handoff_router.models],
    "feedback": [handoff_feedback.models, handoff_feedback.kpi_models],
}
RUNTIME_TABLES = {
    "scorer": {"outbox", "processed_events", "broker_epoch", "idempotency_keys"},
    # The router takes no webhooks, so it keeps no idempotency keys.
    "router": {"outbox", "processed_events", "broker_epoch"},
    "feedback": {"outbox", "processed_events", "broker_epoch", "idempotency_keys"},
}


def expected(service: str) -> sa.MetaData:
    """The service's models' tables and the runtime tables it uses, in its schema."""
    metadata = sa.MetaData()
    for module in MODELS[service]:
        assert service == module.SCHEMA
    for table in SQLModel.metadata.tables.values():
        if table.schema == service:
            table.to_metadata(metadata)
    for name, table in RuntimeTables(service).metadata.tables.items():
        if name.split(".")[-1] in RUNTIME_TABLES[service]:
            table.to_metadata(metadata)
    return metadata


def in_scope(service: str) -> Any:
    """Alembic's name filter: the service's schema, without Alembic's own version table."""

    def include(name: str | None, kind: str, parent: Any) -> bool:
        if kind == "schema":
            return name == service
        return not (kind == "table" and name == "alembic_version")

    return include


@pytest.mark.parametrize("service", sorted(MODELS))
async def test_the_models_are_what_the_migrations_create(infra: Infra, service: str) -> None:
    metadata = expected(service)
    assert metadata.tables, f"no models found for {service}"

    def differences(conn: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(
            conn, opts={"include_schemas": True, "include_name": in_scope(service)}
        )
        return list(compare_metadata(context, metadata))

    with service_database(infra.database_url, service) as url:
        engine = create_async_engine(async_url(url))
        try:
            async with engine.connect() as conn:
                found = await conn.run_sync(differences)
        finally:
            await engine.dispose()
    assert found == [], "\n".join(str(d)[:300] for d in found)
