"""Each assignment names the account (domain) its lead belonged to when it was made, indexed
with its state and time: finding an account's owner reads the newest row of one index range
instead of joining every routed lead of the domain to its assignments.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

SCHEMA = "router"


def upgrade() -> None:
    op.add_column("assignments", sa.Column("account_domain", sa.String), schema=SCHEMA)
    op.execute(
        "UPDATE router.assignments AS a SET account_domain = r.account_domain"
        " FROM router.routed_leads AS r WHERE r.lead_id = a.lead_id"
        " AND r.account_domain IS NOT NULL"
    )
    op.create_index(
        "assignments_account_owner",
        "assignments",
        ["account_domain", "active", "assigned_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("account_domain IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("assignments_account_owner", table_name="assignments", schema=SCHEMA)
    op.drop_column("assignments", "account_domain", schema=SCHEMA)
