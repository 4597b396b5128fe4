"""Leads, scores, ICP versions and the runtime tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from handoff_runtime.tables import create_runtime_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "scorer"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "leads",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("email", sa.String, nullable=False, index=True),
        sa.Column("profile", JSONB, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("score", sa.Float),
        sa.Column("grade", sa.String),
        sa.Column("engagement_level", sa.Integer),
        sa.Column("icp_version", sa.Integer),
        sa.Column("scored_at", TS),
        schema=SCHEMA,
    )
    op.create_table(
        "lead_scores",
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column(
            "lead_id", sa.String(64), sa.ForeignKey(f"{SCHEMA}.leads.id"), nullable=False, index=True
        ),
        sa.Column("icp_version", sa.Integer, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("grade", sa.String, nullable=False),
        sa.Column("engagement_level", sa.Integer, nullable=False),
        sa.Column("contributions", JSONB, nullable=False),
        sa.Column("disqualifiers", JSONB, nullable=False),
        sa.Column("scored_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "icp_versions",
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("document", JSONB, nullable=False),
        sa.Column("published_at", TS, nullable=False),
        schema=SCHEMA,
    )
    create_runtime_tables(op, SCHEMA)


def downgrade() -> None:
    for table in ("lead_scores", "leads", "icp_versions"):
        op.drop_table(table, schema=SCHEMA)
