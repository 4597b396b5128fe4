"""Routing rules, team managers and working-hours policy; rep territories, segments,
daily caps, working hours and out-of-office ranges.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "router"
EMPTY = sa.text("'[]'::jsonb")


def upgrade() -> None:
    op.add_column("teams", sa.Column("manager_name", sa.String), schema=SCHEMA)
    op.add_column("teams", sa.Column("manager_email", sa.String), schema=SCHEMA)
    op.add_column(
        "teams",
        sa.Column("respect_working_hours", sa.Boolean, nullable=False, server_default=sa.false()),
        schema=SCHEMA,
    )
    op.add_column("reps", sa.Column("daily_cap", sa.Integer), schema=SCHEMA)
    op.add_column(
        "reps", sa.Column("timezone", sa.String, nullable=False, server_default="UTC"), schema=SCHEMA
    )
    op.add_column("reps", sa.Column("working_hours", JSONB), schema=SCHEMA)
    for column in ("out_of_office", "countries", "industries", "size_bands"):
        op.add_column(
            "reps", sa.Column(column, JSONB, nullable=False, server_default=EMPTY), schema=SCHEMA
        )
    op.create_table(
        "routing_rules",
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False, unique=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("team_id", sa.String(64), sa.ForeignKey(f"{SCHEMA}.teams.id"), nullable=False),
        sa.Column("conditions", JSONB, nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("routing_rules", schema=SCHEMA)
    for column in (
        "size_bands",
        "industries",
        "countries",
        "out_of_office",
        "working_hours",
        "timezone",
        "daily_cap",
    ):
        op.drop_column("reps", column, schema=SCHEMA)
    for column in ("respect_working_hours", "manager_email", "manager_name"):
        op.drop_column("teams", column, schema=SCHEMA)
