"""Idempotent deliveries: the first answer to each webhook-id or Idempotency-Key.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from alembic import op

from handoff_runtime.tables import create_idempotency_table

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "scorer"


def upgrade() -> None:
    create_idempotency_table(op, SCHEMA)


def downgrade() -> None:
    op.drop_table("idempotency_keys", schema=SCHEMA)
