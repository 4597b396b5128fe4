"""One lead per normalised email; leads linked to accounts by company domain.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "scorer"


def upgrade() -> None:
    op.execute(f"UPDATE {SCHEMA}.leads SET email = lower(btrim(email))")
    op.drop_index("ix_scorer_leads_email", table_name="leads", schema=SCHEMA)
    op.create_index("leads_email_key", "leads", ["email"], unique=True, schema=SCHEMA)
    op.add_column("leads", sa.Column("account_domain", sa.String), schema=SCHEMA)
    op.create_index("leads_account_domain", "leads", ["account_domain"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("leads_account_domain", table_name="leads", schema=SCHEMA)
    op.drop_column("leads", "account_domain", schema=SCHEMA)
    op.drop_index("leads_email_key", table_name="leads", schema=SCHEMA)
    op.create_index("ix_scorer_leads_email", "leads", ["email"], schema=SCHEMA)
