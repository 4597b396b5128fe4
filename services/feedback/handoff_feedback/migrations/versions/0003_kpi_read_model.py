"""The shared KPI read model: per-lead funnel facts and the outcomes that ended sales cycles,
fed by the feedback-kpis consumer group.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "feedback"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "kpi_leads",
        sa.Column("lead_id", sa.String(64), primary_key=True),
        sa.Column("created_at", TS, index=True),
        sa.Column("campaign", sa.String),
        sa.Column("campaign_at", TS),
        sa.Column("source", sa.String),
        sa.Column("source_at", TS),
        sa.Column("fit_grade", sa.String),
        sa.Column("score", sa.Float),
        sa.Column("graded_at", TS),
        sa.Column("stage", sa.Integer, nullable=False, server_default="0"),
        sa.Column("mql_at", TS),
        sa.Column("assigned_at", TS),
        sa.Column("touched_at", TS),
        sa.Column("sla_breached_at", TS),
        sa.Column("team_id", sa.String),
        sa.Column("team_at", TS),
        sa.Column("rep_id", sa.String),
        sa.Column("rep_at", TS),
        schema=SCHEMA,
    )
    op.create_table(
        "kpi_outcomes",
        sa.Column("event_id", sa.String, primary_key=True),
        sa.Column("lead_id", sa.String(64), nullable=False, index=True),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("reason", sa.String),
        sa.Column("amount", sa.Numeric(14, 2)),
        sa.Column("rep_id", sa.String),
        sa.Column("team_id", sa.String),
        sa.Column("occurred_at", TS, nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in ("kpi_outcomes", "kpi_leads"):
        op.drop_table(table, schema=SCHEMA)
