"""The router's tables (schema `router`): teams, reps, assignments, backlog, decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

SCHEMA = "router"
TS = sa.DateTime(timezone=True)


class Team(SQLModel, table=True):
    """A sales team; leads are routed to the default team until routing rules exist."""

    __tablename__ = "teams"
    __table_args__ = {"schema": SCHEMA}

    id: str = Field(primary_key=True, max_length=64)
    name: str
    is_default: bool = False
    manager_name: str | None = None
    manager_email: str | None = None
    respect_working_hours: bool = False
    created_at: datetime = Field(sa_type=TS)


class Rep(SQLModel, table=True):
    """A sales rep and their capacity: how many working leads they can hold at once.

    `working` is the count of their active assignments, kept in the same transactions
    that create and end assignments, under the team's routing lock."""

    __tablename__ = "reps"
    __table_args__ = (sa.Index("ix_reps_team_id", "team_id"), {"schema": SCHEMA})

    id: str = Field(primary_key=True, max_length=64)
    team_id: str = Field(foreign_key=f"{SCHEMA}.teams.id")
    name: str
    email: str
    capacity: int
    working: int = 0
    active: bool = True
    weight: float = 1.0
    daily_cap: int | None = None
    timezone: str = "UTC"
    working_hours: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(JSONB))
    out_of_office: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=sa.Column(JSONB, nullable=False)
    )
    countries: list[str] = Field(default_factory=list, sa_column=sa.Column(JSONB, nullable=False))
    industries: list[str] = Field(default_factory=list, sa_column=sa.Column(JSONB, nullable=False))
    size_bands: list[str] = Field(default_factory=list, sa_column=sa.Column(JSONB, nullable=False))
    languages: list[str] = Field(default_factory=list, sa_column=sa.Column(JSONB, nullable=False))
    last_assigned_at: datetime | None = Field(default=None, sa_type=TS)
    created_at: datetime = Field(sa_type=TS)


class Assignment(SQLModel, table=True):
    """A rep owning a lead. At most one active assignment per lead (partial unique index)."""

    __tablename__ = "assignments"
    __table_args__ = (
        sa.Index(
            "one_active_owner_per_lead",
            "lead_id",
            unique=True,
            postgresql_where=sa.text("active"),
        ),
        sa.Index("ix_assignments_rep_id", "rep_id"),
        sa.Index("assignments_rep_assigned_at", "rep_id", "assigned_at"),
        sa.Index(
            "assignments_awaiting_first_touch",
            "assigned_at",
            postgresql_where=sa.text("active AND first_touched_at IS NULL"),
        ),
        sa.Index(
            "assignments_account_owner",
            "account_domain",
            "active",
            "assigned_at",
            postgresql_where=sa.text("account_domain IS NOT NULL"),
        ),
        {"schema": SCHEMA},
    )

    id: int | None = Field(default=None, primary_key=True)
    lead_id: str = Field(index=True)
    rep_id: str = Field(foreign_key=f"{SCHEMA}.reps.id")
    team_id: str
    active: bool = True
    assigned_at: datetime = Field(sa_type=TS)
    cycle: int = Field(default=1, description="The lead's sales cycle this ownership is in.")
    released_at: datetime | None = Field(default=None, sa_type=TS)
    release_reason: str | None = None
    first_touched_at: datetime | None = Field(default=None, sa_type=TS)
    account_domain: str | None = Field(
        default=None, description="The lead's account when the assignment was made."
    )


class RoutedLead(SQLModel, table=True):
    """Where each lead the router has seen stands: assigned, queued, nurture or released (in
    its latest sales cycle; the decisions and assignments of earlier cycles are kept)."""

    __tablename__ = "routed_leads"
    __table_args__ = {"schema": SCHEMA}

    lead_id: str = Field(primary_key=True, max_length=64)
    state: str
    team_id: str | None = None
    rep_id: str | None = None
    grade: str
    score: float
    icp_version: int
    received_at: datetime = Field(sa_type=TS)
    updated_at: datetime = Field(sa_type=TS)
    reassignments: int = 0
    account_domain: str | None = Field(default=None, index=True)
    scored: dict[str, Any] | None = Field(
        default=None, sa_column=sa.Column(JSONB), description="The scored event it was routed by."
    )
    cycle: int = Field(
        default=1, description="The lead's sales cycle: one more each time it re-qualifies."
    )


class BacklogEntry(SQLModel, table=True):
    """A lead waiting for room in a team, with the scored event needed to route it later."""

    __tablename__ = "backlog"
    __table_args__ = (
        sa.Index("backlog_priority", "team_id", "grade", sa.text("score DESC"), "queued_at"),
        sa.Index("backlog_queued_at", "queued_at"),
        {"schema": SCHEMA},
    )

    lead_id: str = Field(primary_key=True, max_length=64)
    team_id: str = Field(foreign_key=f"{SCHEMA}.teams.id")
    grade: str
    score: float
    queued_at: datetime = Field(sa_type=TS)
    scored: dict[str, Any] = Field(sa_column=sa.Column(JSONB, nullable=False))
    reserved_rep_id: str | None = Field(
        default=None, description="The account owner this lead waits for, if any."
    )


class Decision(SQLModel, table=True):
    """Why the router did what it did with a lead, each time it decided."""

    __tablename__ = "decisions"
    __table_args__ = {"schema": SCHEMA}

    id: int | None = Field(default=None, primary_key=True)
    lead_id: str = Field(index=True)
    outcome: str
    decided_at: datetime = Field(sa_type=TS)
    decision: dict[str, Any] = Field(sa_column=sa.Column(JSONB, nullable=False))
    cycle: int = Field(default=1, description="The lead's sales cycle it was decided in.")


class RoutingRule(SQLModel, table=True):
    """One ordered routing rule: leads matching its conditions go to its team."""

    __tablename__ = "routing_rules"
    __table_args__ = (sa.UniqueConstraint("position"), {"schema": SCHEMA})

    id: int | None = Field(default=None, primary_key=True)
    position: int
    name: str
    team_id: str = Field(foreign_key=f"{SCHEMA}.teams.id")
    conditions: dict[str, Any] = Field(sa_column=sa.Column(JSONB, nullable=False))


class TeamCapacityLevel(SQLModel, table=True):
    """The capacity level last announced for a team (`handoff.capacity.changed.v1`): the
    level and the event change in one transaction, so each change is announced once."""

    __tablename__ = "capacity_levels"
    __table_args__ = {"schema": SCHEMA}

    team_id: str = Field(primary_key=True, max_length=64, foreign_key=f"{SCHEMA}.teams.id")
    level: str
    changed_at: datetime = Field(sa_type=TS)


# The capacity rates read the last hours of decisions and releases (migration 0004).
sa.Index("decisions_decided_at", Decision.__table__.c.decided_at)  # type: ignore[attr-defined]
sa.Index(
    "assignments_released_at",
    Assignment.__table__.c.released_at,  # type: ignore[attr-defined]
    postgresql_where=sa.text("released_at IS NOT NULL"),
)
