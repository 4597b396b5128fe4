"""First-touch SLA: when each assignment was first touched, how often a lead was taken away,
and the scored event each lead was routed by (to reassign it).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "router"


def upgrade() -> None:
    op.add_column(
        "assignments", sa.Column("first_touched_at", sa.DateTime(timezone=True)), schema=SCHEMA
    )
    op.create_index(
        "assignments_awaiting_first_touch",
        "assignments",
        ["assigned_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("active AND first_touched_at IS NULL"),
    )
    op.add_column(
        "routed_leads",
        sa.Column("reassignments", sa.Integer, nullable=False, server_default="0"),
        schema=SCHEMA,
    )
    op.add_column("routed_leads", sa.Column("scored", JSONB), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("routed_leads", "scored", schema=SCHEMA)
    op.drop_column("routed_leads", "reassignments", schema=SCHEMA)
    op.drop_index("assignments_awaiting_first_touch", table_name="assignments", schema=SCHEMA)
    op.drop_column("assignments", "first_touched_at", schema=SCHEMA)
