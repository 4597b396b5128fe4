"""Account matching: leads remember their account domain, and a queued lead may wait for
its account owner.

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

SCHEMA = "router"


def upgrade() -> None:
    op.add_column("routed_leads", sa.Column("account_domain", sa.String), schema=SCHEMA)
    op.create_index(
        "ix_router_routed_leads_account_domain", "routed_leads", ["account_domain"], schema=SCHEMA
    )
    op.add_column("backlog", sa.Column("reserved_rep_id", sa.String(64)), schema=SCHEMA)
    op.create_index("backlog_queued_at", "backlog", ["queued_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("backlog_queued_at", table_name="backlog", schema=SCHEMA)
    op.drop_column("backlog", "reserved_rep_id", schema=SCHEMA)
    op.drop_index("ix_router_routed_leads_account_domain", table_name="routed_leads", schema=SCHEMA)
    op.drop_column("routed_leads", "account_domain", schema=SCHEMA)
