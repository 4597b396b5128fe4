"""Re-qualification of nurtured leads: each lead's sales cycle and its re-qualify date.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SCHEMA = "scorer"


def upgrade() -> None:
    op.add_column(
        "leads", sa.Column("cycle", sa.Integer, nullable=False, server_default="1"), schema=SCHEMA
    )
    op.add_column("leads", sa.Column("requalify_on", sa.Date), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("leads", "requalify_on", schema=SCHEMA)
    op.drop_column("leads", "cycle", schema=SCHEMA)
