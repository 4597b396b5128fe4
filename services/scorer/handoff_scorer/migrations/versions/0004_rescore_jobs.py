"""Re-score jobs: every scored lead re-scored with one ICP version, batch by batch.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "scorer"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "rescore_jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("icp_version", sa.Integer, nullable=False),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("done", sa.Integer, nullable=False),
        sa.Column("changed", sa.Integer, nullable=False),
        sa.Column("cursor", sa.String(64)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        schema=SCHEMA,
    )
    op.create_index(
        "rescore_jobs_running",
        "rescore_jobs",
        ["created_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("state = 'running'"),
    )


def downgrade() -> None:
    op.drop_table("rescore_jobs", schema=SCHEMA)
