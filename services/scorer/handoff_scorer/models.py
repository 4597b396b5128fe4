"""The scorer's tables (schema `scorer`): leads as received, their scores, ICP versions."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

SCHEMA = "scorer"


class Lead(SQLModel, table=True):
    """A lead as received from marketing, with its latest score."""

    __tablename__ = "leads"
    __table_args__ = (
        sa.Index("leads_email_key", "email", unique=True),
        sa.Index("leads_account_domain", "account_domain"),
        {"schema": SCHEMA},
    )

    id: str = Field(primary_key=True, max_length=64)
    email: str = Field(description="Normalised (unique): one lead per person.")
    profile: dict[str, Any] = Field(sa_column=sa.Column(JSONB, nullable=False))
    received_at: datetime = Field(sa_type=sa.DateTime(timezone=True))
    status: str = Field(default="received", description="received | scored")
    score: float | None = None
    grade: str | None = None
    engagement_level: int | None = None
    icp_version: int | None = None
    account_domain: str | None = None
    outcome: str | None = Field(
        default=None, description="How sales closed the lead (won, lost, disqualified, recycled)."
    )
    scored_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    cycle: int = Field(
        default=1,
        description="Which time the lead goes to sales: 1, then one more each time it "
        "re-qualifies after nurture.",
    )
    requalify_on: date | None = Field(
        default=None,
        description="When a lead sales disqualified or recycled may go back to sales, if it "
        "shows new engagement.",
    )


class LeadScore(SQLModel, table=True):
    """One scoring of a lead against one ICP version, with its explanation."""

    __tablename__ = "lead_scores"
    __table_args__ = {"schema": SCHEMA}

    id: int | None = Field(default=None, primary_key=True)
    lead_id: str = Field(foreign_key=f"{SCHEMA}.leads.id", index=True)
    icp_version: int
    score: float
    grade: str
    engagement_level: int
    contributions: list[dict[str, Any]] = Field(sa_column=sa.Column(JSONB, nullable=False))
    disqualifiers: list[str] = Field(sa_column=sa.Column(JSONB, nullable=False))
    scored_at: datetime = Field(sa_type=sa.DateTime(timezone=True))


class IcpVersion(SQLModel, table=True):
    """A published version of the ideal customer profile; the highest version is current."""

    __tablename__ = "icp_versions"
    __table_args__ = {"schema": SCHEMA}

    version: int = Field(primary_key=True)
    document: dict[str, Any] = Field(sa_column=sa.Column(JSONB, nullable=False))
    published_at: datetime = Field(sa_type=sa.DateTime(timezone=True))


class RescoreJob(SQLModel, table=True):
    """Re-scoring every scored lead with one ICP version, batch by batch."""

    __tablename__ = "rescore_jobs"
    __table_args__ = (
        sa.Index(
            "rescore_jobs_running", "created_at", postgresql_where=sa.text("state = 'running'")
        ),
        {"schema": SCHEMA},
    )

    id: str = Field(primary_key=True, max_length=64)
    icp_version: int
    state: str = Field(description="running | done")
    total: int
    done: int = 0
    changed: int = Field(default=0, description="Leads whose grade changed (re-announced).")
    cursor: str | None = Field(default=None, description="Last lead id re-scored.")
    created_at: datetime = Field(sa_type=sa.DateTime(timezone=True))
    finished_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
