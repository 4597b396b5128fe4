"""How sales closed each lead, so re-scoring only touches open leads.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMA = "scorer"


def upgrade() -> None:
    op.add_column("leads", sa.Column("outcome", sa.String), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("leads", "outcome", schema=SCHEMA)
