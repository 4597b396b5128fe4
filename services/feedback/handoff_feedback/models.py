"""Feedback's tables (schema `feedback`): each lead's lifecycle, its full history, and the
status reports waiting for a lead's assignment."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

SCHEMA = "feedback"
TS = sa.DateTime(timezone=True)


class TrackedLead(SQLModel, table=True):
    """A lead's place in the lifecycle: its routing state until assigned, then its status."""

    __tablename__ = "leads"
    __table_args__ = {"schema": SCHEMA}

    lead_id: str = Field(primary_key=True, max_length=64)
    status: str = Field(description="new | queued | nurture | a lifecycle status")
    rep_id: str | None = None
    team_id: str | None = None
    updated_at: datetime = Field(sa_type=TS)
    cycle: int = Field(default=1, description="Which time the lead is with sales.")
    status_at: datetime | None = Field(
        default=None,
        sa_type=TS,
        description="When sales reported the current status (null: since the assignment).",
    )


class HistoryEntry(SQLModel, table=True):
    """One step of a lead's story: who moved it where, when and why."""

    __tablename__ = "history"
    __table_args__ = {"schema": SCHEMA}

    id: int | None = Field(default=None, primary_key=True)
    lead_id: str = Field(index=True)
    from_status: str | None = None
    to_status: str
    reason: str | None = None
    note: str | None = Field(default=None, sa_type=sa.Text)
    actor: str | None = None
    rep_id: str | None = None
    occurred_at: datetime = Field(sa_type=TS)
    recorded_at: datetime = Field(sa_type=TS)
    disposition: str = Field(default="applied", description="applied | late | duplicate ...")
    cycle: int = 1
    amount: Decimal | None = Field(default=None, sa_type=sa.Numeric(14, 2))
    delivery_id: str | None = None


class PendingStatus(SQLModel, table=True):
    """A status report that came before feedback saw the lead's assignment; applied then."""

    __tablename__ = "pending_statuses"
    __table_args__ = {"schema": SCHEMA}

    id: int | None = Field(default=None, primary_key=True)
    lead_id: str = Field(index=True)
    change: dict[str, Any] = Field(sa_column=sa.Column(JSONB, nullable=False))
    delivery_id: str | None = None
    received_at: datetime = Field(sa_type=TS)
