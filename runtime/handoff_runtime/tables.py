"""The tables every service has in its own schema: outbox, processed events, broker epoch,
and the idempotency keys of webhook deliveries."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB


class RuntimeTables:
    """The runtime's tables, placed in one service's schema."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.metadata = sa.MetaData(schema=schema)
        self.outbox = sa.Table(
            "outbox",
            self.metadata,
            *_outbox_columns(),
            sa.Index("outbox_unpublished", "id", postgresql_where=sa.text("published_at IS NULL")),
            sa.Index("outbox_published_at", "published_at"),
        )
        self.processed_events = sa.Table("processed_events", self.metadata, *_processed_columns())
        self.broker_epoch = sa.Table("broker_epoch", self.metadata, *_epoch_columns())
        self.idempotency_keys = sa.Table(
            "idempotency_keys",
            self.metadata,
            *_idempotency_columns(),
            sa.Index("idempotency_keys_created_at", "created_at"),
        )


def _outbox_columns() -> list[Any]:
    return [
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.Text, nullable=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=True),
        sa.Column("value", sa.LargeBinary, nullable=True),
        sa.Column("headers", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    ]


def _processed_columns() -> list[Any]:
    return [
        sa.Column("event_key", sa.Text, primary_key=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column(
            "processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    ]


def _epoch_columns() -> list[Any]:
    return [
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("epoch", sa.Text, nullable=False),
        sa.Column(
            "seen_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    ]


def _idempotency_columns() -> list[Any]:
    return [
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("request_hash", sa.Text, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("response", JSONB, nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    ]


def create_runtime_tables(op: Any, schema: str) -> None:
    """Alembic step that creates the runtime tables in `schema` (each service's first migration)."""
    op.create_table("outbox", *_outbox_columns(), schema=schema)
    op.create_table("processed_events", *_processed_columns(), schema=schema)
    op.create_table("broker_epoch", *_epoch_columns(), schema=schema)
    op.create_index(
        "outbox_unpublished",
        "outbox",
        ["id"],
        schema=schema,
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_index("outbox_published_at", "outbox", ["published_at"], schema=schema)


def create_idempotency_table(op: Any, schema: str) -> None:
    """Alembic step that creates the idempotency keys table in `schema` (a service's migration
    that adds webhook intake; not part of create_runtime_tables, whose migrations have run)."""
    op.create_table("idempotency_keys", *_idempotency_columns(), schema=schema)
    op.create_index(
        "idempotency_keys_created_at", "idempotency_keys", ["created_at"], schema=schema
    )
