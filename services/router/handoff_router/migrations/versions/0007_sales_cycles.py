"""Sales cycles: a lead that re-qualifies after nurture is routed again as its next cycle;
each routing decision remembers the cycle it was made in.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SCHEMA = "router"


def upgrade() -> None:
    op.add_column(
        "routed_leads",
        sa.Column("cycle", sa.Integer, nullable=False, server_default="1"),
        schema=SCHEMA,
    )
    op.add_column(
        "decisions",
        sa.Column("cycle", sa.Integer, nullable=False, server_default="1"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("decisions", "cycle", schema=SCHEMA)
    op.drop_column("routed_leads", "cycle", schema=SCHEMA)
