"""Signed, idempotent status intake; out-of-order deliveries; statuses waiting for the
assignment; sales cycles (a re-qualified lead starts a new one).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from handoff_runtime.tables import create_idempotency_table

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "feedback"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    create_idempotency_table(op, SCHEMA)
    op.add_column(
        "leads", sa.Column("cycle", sa.Integer, nullable=False, server_default="1"), schema=SCHEMA
    )
    op.add_column("leads", sa.Column("status_at", TS), schema=SCHEMA)
    op.add_column(
        "history",
        sa.Column("disposition", sa.String, nullable=False, server_default="applied"),
        schema=SCHEMA,
    )
    op.add_column(
        "history", sa.Column("cycle", sa.Integer, nullable=False, server_default="1"), schema=SCHEMA
    )
    op.add_column("history", sa.Column("amount", sa.Numeric(14, 2)), schema=SCHEMA)
    op.add_column("history", sa.Column("delivery_id", sa.String(300)), schema=SCHEMA)
    op.create_table(
        "pending_statuses",
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("lead_id", sa.String(64), nullable=False, index=True),
        sa.Column("change", JSONB, nullable=False),
        sa.Column("delivery_id", sa.String(300)),
        sa.Column("received_at", TS, nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("pending_statuses", schema=SCHEMA)
    for column in ("delivery_id", "amount", "cycle", "disposition"):
        op.drop_column("history", column, schema=SCHEMA)
    for column in ("status_at", "cycle"):
        op.drop_column("leads", column, schema=SCHEMA)
    op.drop_table("idempotency_keys", schema=SCHEMA)
