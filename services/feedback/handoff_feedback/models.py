"""Feedback's tables (schema `feedback`): each lead's lifecycle and its full history."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

SCHEMA = "feedback"
TS = sa.DateTime(timezone=True)


class TrackedLead(SQLModel, table=True):
    """A lead's place in the lifecycle: its routing state until assigned, then its status."""

    __tablename__ = "leads"
    __table_args__ = {"schema": SCHEMA}

    lead_id: str = Field(primary_key=True, max_length=64)
    status: str = Field(description="queued | nurture | a lifecycle status")
    rep_id: str | None = None
    team_id: str | None = None
    updated_at: datetime = Field(sa_type=TS)


class HistoryEntry(SQLModel, table=True):
    """One step of a lead's story: who moved it where, when and why."""

    __tablename__ = "history"
    __table_args__ = {"schema": SCHEMA}

    id: int | None = Field(default=None, primary_key=True)
    lead_id: str = Field(index=True)
    from_status: str | None = None
    to_status: str
    reason: str | None = None
    note: str | None = None
    actor: str | None = None
    rep_id: str | None = None
    occurred_at: datetime = Field(sa_type=TS)
    recorded_at: datetime = Field(sa_type=TS)
