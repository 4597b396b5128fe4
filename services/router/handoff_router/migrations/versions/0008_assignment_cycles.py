"""Each assignment remembers its sales cycle, so a release from an earlier cycle frees
nothing and a lead that re-qualified while still assigned is routed again on its release.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SCHEMA = "router"


def upgrade() -> None:
    op.add_column(
        "assignments",
        sa.Column("cycle", sa.Integer, nullable=False, server_default="1"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("assignments", "cycle", schema=SCHEMA)
