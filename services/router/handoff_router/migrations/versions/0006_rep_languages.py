"""Reps list the languages they speak; leads with a preferred language go to them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SCHEMA = "router"


def upgrade() -> None:
    op.add_column(
        "reps",
        sa.Column("languages", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("reps", "languages", schema=SCHEMA)
