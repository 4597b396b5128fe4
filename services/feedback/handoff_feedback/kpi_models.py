"""The shared KPI read model (schema `feedback`): one row per lead with the facts the funnel,
speed-to-lead and attribution figures are computed from, and one row per outcome that ended
a sales cycle (won with its amount; lost, disqualified or recycled with its reason).

Both tables are written only from events (by feedback's consumer group, or by `rebuild`
replaying the topics), never from another service's tables."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import IntEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

SCHEMA = "feedback"
TS = sa.DateTime(timezone=True)


class Stage(IntEnum):
    """The funnel's stages in order, as stored in `kpi_leads.stage`: a lead that reached one
    reached every earlier one."""

    LEADS = 0
    MQL = 1
    ASSIGNED = 2
    ACCEPTED = 3
    CONTACTED = 4
    QUALIFIED = 5
    CONVERTED = 6
    WON = 7

    @property
    def step(self) -> str:
        """The stage's column in the funnel report (`leads`, `mql`, `assigned`, ...)."""
        return self.name.lower()


FUNNEL: tuple[Stage, ...] = tuple(Stage)


class KpiLead(SQLModel, table=True):
    """What the events told about one lead. Every column merges order-insensitively: times
    keep the earliest, the stage keeps the furthest, attribution keeps the first known value
    and grade and owner keep the latest, so any delivery order ends in the same row."""

    __tablename__ = "kpi_leads"
    __table_args__ = {"schema": SCHEMA}

    lead_id: str = Field(primary_key=True, max_length=64)
    created_at: datetime | None = Field(
        default=None,
        sa_type=TS,
        index=True,
        description="First received_at of the lead's lead.created events; null until one is seen.",
    )
    campaign: str | None = Field(default=None, description="First-touch campaign.")
    campaign_at: datetime | None = Field(default=None, sa_type=TS)
    source: str | None = Field(default=None, description="First-touch source.")
    source_at: datetime | None = Field(default=None, sa_type=TS)
    fit_grade: str | None = Field(default=None, description="Latest fit grade, A-D.")
    score: float | None = None
    graded_at: datetime | None = Field(default=None, sa_type=TS)
    stage: int = Field(default=0, description="Furthest funnel stage reached (a Stage).")
    mql_at: datetime | None = Field(default=None, sa_type=TS, description="First handed to sales.")
    assigned_at: datetime | None = Field(default=None, sa_type=TS)
    touched_at: datetime | None = Field(default=None, sa_type=TS, description="First touch.")
    sla_breached_at: datetime | None = Field(default=None, sa_type=TS)
    team_id: str | None = Field(default=None, description="Latest owning team.")
    team_at: datetime | None = Field(default=None, sa_type=TS)
    rep_id: str | None = Field(default=None, description="Latest owning rep.")
    rep_at: datetime | None = Field(default=None, sa_type=TS)


class KpiOutcome(SQLModel, table=True):
    """A status change that ended a sales cycle, keyed by the event that reported it."""

    __tablename__ = "kpi_outcomes"
    __table_args__ = {"schema": SCHEMA}

    event_id: str = Field(primary_key=True)
    lead_id: str = Field(index=True, max_length=64)
    status: str = Field(description="won | lost | disqualified | recycled")
    reason: str | None = None
    amount: Decimal | None = Field(default=None, sa_type=sa.Numeric(14, 2))
    rep_id: str | None = None
    team_id: str | None = None
    occurred_at: datetime = Field(sa_type=TS)
