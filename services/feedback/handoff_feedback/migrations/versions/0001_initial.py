"""Tracked leads, their history and the runtime tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from handoff_runtime.tables import create_runtime_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "feedback"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "leads",
        sa.Column("lead_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("rep_id", sa.String(64)),
        sa.Column("team_id", sa.String(64)),
        sa.Column("updated_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "history",
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("lead_id", sa.String(64), nullable=False, index=True),
        sa.Column("from_status", sa.String),
        sa.Column("to_status", sa.String, nullable=False),
        sa.Column("reason", sa.String),
        sa.Column("note", sa.Text),
        sa.Column("actor", sa.String),
        sa.Column("rep_id", sa.String(64)),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        schema=SCHEMA,
    )
    create_runtime_tables(op, SCHEMA)


def downgrade() -> None:
    for table in ("history", "leads"):
        op.drop_table(table, schema=SCHEMA)
