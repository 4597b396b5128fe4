"""Capacity headroom: the level last announced per team, and indexes for the intake and
release rates over the last hours.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "router"


def upgrade() -> None:
    op.create_table(
        "capacity_levels",
        sa.Column("team_id", sa.String(64), sa.ForeignKey(f"{SCHEMA}.teams.id"), primary_key=True),
        sa.Column("level", sa.String, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("decisions_decided_at", "decisions", ["decided_at"], schema=SCHEMA)
    op.create_index(
        "assignments_released_at",
        "assignments",
        ["released_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("released_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("assignments_released_at", table_name="assignments", schema=SCHEMA)
    op.drop_index("decisions_decided_at", table_name="decisions", schema=SCHEMA)
    op.drop_table("capacity_levels", schema=SCHEMA)
