"""Assignments indexed by rep and time: a rep's assignments since midnight (the daily cap) are
a range of this index instead of every assignment the rep ever had.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SCHEMA = "router"


def upgrade() -> None:
    op.create_index(
        "assignments_rep_assigned_at",
        "assignments",
        ["rep_id", "assigned_at"],
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_index("assignments_rep_assigned_at", table_name="assignments", schema=SCHEMA)
