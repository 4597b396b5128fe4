"""Teams, reps, assignments, backlog, decisions and the runtime tables.

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

SCHEMA = "router"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("is_default", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "reps",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("team_id", sa.String(64), sa.ForeignKey(f"{SCHEMA}.teams.id"), nullable=False),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("email", sa.String, nullable=False),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("working", sa.Integer, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("weight", sa.Float, nullable=False),
        sa.Column("last_assigned_at", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("capacity >= 0", name="capacity_not_negative"),
        sa.CheckConstraint("working >= 0", name="working_not_negative"),
        schema=SCHEMA,
    )
    op.create_index("ix_reps_team_id", "reps", ["team_id"], schema=SCHEMA)
    op.create_table(
        "assignments",
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("lead_id", sa.String(64), nullable=False, index=True),
        sa.Column("rep_id", sa.String(64), sa.ForeignKey(f"{SCHEMA}.reps.id"), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("assigned_at", TS, nullable=False),
        sa.Column("released_at", TS),
        sa.Column("release_reason", sa.String),
        schema=SCHEMA,
    )
    op.create_index("ix_assignments_rep_id", "assignments", ["rep_id"], schema=SCHEMA)
    op.create_index(
        "one_active_owner_per_lead",
        "assignments",
        ["lead_id"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("active"),
    )
    op.create_table(
        "routed_leads",
        sa.Column("lead_id", sa.String(64), primary_key=True),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("team_id", sa.String(64)),
        sa.Column("rep_id", sa.String(64)),
        sa.Column("grade", sa.String(1), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("icp_version", sa.Integer, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "backlog",
        sa.Column("lead_id", sa.String(64), primary_key=True),
        sa.Column("team_id", sa.String(64), sa.ForeignKey(f"{SCHEMA}.teams.id"), nullable=False),
        sa.Column("grade", sa.String(1), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("queued_at", TS, nullable=False),
        sa.Column("scored", JSONB, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "backlog_priority",
        "backlog",
        ["team_id", "grade", sa.text("score DESC"), "queued_at"],
        schema=SCHEMA,
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("lead_id", sa.String(64), nullable=False, index=True),
        sa.Column("outcome", sa.String, nullable=False),
        sa.Column("decided_at", TS, nullable=False),
        sa.Column("decision", JSONB, nullable=False),
        schema=SCHEMA,
    )
    create_runtime_tables(op, SCHEMA)


def downgrade() -> None:
    for table in ("decisions", "backlog", "routed_leads", "assignments", "reps", "teams"):
        op.drop_table(table, schema=SCHEMA)
