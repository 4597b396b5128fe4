"""Version 1 event payloads. Additive changes keep the version; a breaking change adds a v2."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, WithJsonSchema
from pydantic.networks import validate_email

from .envelope import Instant


@lru_cache(maxsize=16_384)
def normalised_email(value: str) -> str:
    """`value` as `EmailStr` validates and normalises it (email-validator's syntax checks,
    no DNS), remembered: one lead's address is validated in every event that carries it,
    several times in each consumer, and the checks cost more than the rest of an event's
    decoding. Only valid addresses are remembered; an invalid one raises each time."""
    return validate_email(value)[1]


Email = Annotated[
    str,
    AfterValidator(normalised_email),
    WithJsonSchema({"type": "string", "format": "email"}),
]
"""An email address, checked and normalised exactly as pydantic's `EmailStr` does."""


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class FitGrade(StrEnum):
    """How closely a lead matches the ideal customer profile; A is the ideal fit."""

    A = "A"
    B = "B"
    C = "C"
    D = "D"


class LeadStatus(StrEnum):
    """A lead's lifecycle status as sales reports it."""

    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    CONTACTED = "contacted"
    QUALIFIED = "qualified"
    CONVERTED = "converted"
    WON = "won"
    LOST = "lost"
    DISQUALIFIED = "disqualified"
    RECYCLED = "recycled"


WORKING_STATUSES = frozenset({LeadStatus.ASSIGNED, LeadStatus.ACCEPTED, LeadStatus.CONTACTED})
"""Statuses in which a lead occupies a slot of its owner's capacity."""


class Activity(_Payload):
    """One engagement signal from marketing automation (form fill, webinar, pricing visit...)."""

    type: str = Field(min_length=1, max_length=64, examples=["webinar_attended"])
    occurred_at: Instant


MAX_ACTIVITIES = 500
"""The most activities a lead profile holds; merging keeps the latest."""
MAX_TECHNOLOGIES = 100
"""The most technologies a lead profile lists; merging keeps the latest reported."""


class LeadProfile(_Payload):
    """What marketing knows about the person and their company."""

    email: Email
    name: str | None = Field(default=None, max_length=200)
    company: str | None = Field(default=None, max_length=200)
    domain: str | None = Field(default=None, max_length=253)
    title: str | None = Field(default=None, max_length=200)
    industry: str | None = Field(default=None, max_length=100)
    employees: StrictInt | None = Field(default=None, ge=0, le=10_000_000)
    country: str | None = Field(
        default=None, min_length=2, max_length=2, description="ISO 3166-1 alpha-2."
    )
    source: str | None = Field(default=None, max_length=100)
    campaign: str | None = Field(default=None, max_length=200)
    language: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z]{2}$",
        description="Preferred language, ISO 639-1 (e.g. de), for reps who speak it.",
    )
    product_interest: str | None = Field(
        default=None, max_length=100, description="The product the lead asked about."
    )
    activities: list[Activity] = Field(default_factory=list, max_length=MAX_ACTIVITIES)
    technologies: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list,
        max_length=MAX_TECHNOLOGIES,
        description="Technologies the company uses (from enrichment or form), "
        "e.g. Kubernetes, Salesforce.",
    )


class LeadCreatedV1(_Payload):
    """A lead entered Handoff (webhook intake or a producer writing to the topic)."""

    lead_id: str = Field(min_length=1, max_length=64)
    received_at: Instant
    lead: LeadProfile


class Contribution(_Payload):
    """One criterion's share of a score: why the lead got these points."""

    criterion: str
    matched: str | None = Field(description="The lead's value that matched, or null if none.")
    points: float
    max_points: float


class LeadScoredV1(_Payload):
    """A lead was scored against an ICP version; carries the profile the router needs."""

    lead_id: str = Field(min_length=1, max_length=64)
    icp_version: int = Field(ge=1)
    score: float = Field(ge=0, le=100)
    grade: FitGrade
    engagement_level: int = Field(ge=1, le=4, description="1 = hot ... 4 = cold.")
    contributions: list[Contribution]
    disqualifiers: list[str] = Field(default_factory=list)
    scored_at: Instant
    received_at: Instant
    lead: LeadProfile
    account_domain: str | None = Field(
        default=None,
        description="The company domain that links this lead to others from the same account "
        "(free-mail domains never link).",
    )
    cycle: int = Field(
        default=1,
        ge=1,
        description="Which time the lead goes to sales: 1, then one more each time a lead "
        "nurtured by sales re-qualifies (new engagement after its re-qualify date). A higher "
        "cycle routes a released lead again.",
    )


class Candidate(_Payload):
    """A rep the router considered, with the load it saw."""

    rep_id: str
    working: int = Field(ge=0)
    capacity: int = Field(ge=0)
    chosen: bool
    why: str


class RoutingDecision(_Payload):
    """Why the router did what it did (invariant: every decision records why)."""

    rule: str
    team_id: str | None
    candidates: list[Candidate] = Field(default_factory=list)
    icp_version: int
    score: float
    grade: FitGrade


class LeadAssignedV1(_Payload):
    """A rep now owns the lead and a slot of their capacity is taken."""

    lead_id: str = Field(min_length=1, max_length=64)
    rep_id: str
    rep_name: str
    team_id: str
    assigned_at: Instant
    decision: RoutingDecision
    cycle: int = Field(default=1, ge=1, description="The lead's sales cycle (see lead.scored).")


class LeadQueuedV1(_Payload):
    """Nobody eligible has room: the lead waits in the team's backlog."""

    lead_id: str = Field(min_length=1, max_length=64)
    team_id: str
    queued_at: Instant
    decision: RoutingDecision
    cycle: int = Field(default=1, ge=1, description="The lead's sales cycle (see lead.scored).")


class LeadSlaBreachedV1(_Payload):
    """The owner did not touch the lead by its first-touch deadline; their slot is freed and
    the lead is reassigned (or queued)."""

    lead_id: str = Field(min_length=1, max_length=64)
    rep_id: str
    team_id: str
    assigned_at: Instant
    due_at: Instant
    breached_at: Instant
    reassignments: int = Field(ge=0, description="Times this lead has been taken away so far.")


class LeadEscalatedV1(_Payload):
    """A lead keeps missing its first-touch deadline: its team manager should step in."""

    lead_id: str = Field(min_length=1, max_length=64)
    team_id: str
    manager_name: str | None
    manager_email: str | None
    reassignments: int = Field(ge=0)
    reason: str
    escalated_at: Instant


class NurtureReason(StrEnum):
    """Why a lead goes (back) to marketing's nurture programmes."""

    LOW_FIT = "low_fit"
    SALES_CAPACITY = "sales_capacity"
    NO_BUDGET = "no_budget"
    NO_TIMELINE = "no_timeline"
    NO_AUTHORITY = "no_authority"
    NO_NEED = "no_need"
    UNREACHABLE = "unreachable"
    OTHER = "other"


class LeadNurtureRequestedV1(_Payload):
    """Sales will not work this lead now; marketing should nurture it."""

    lead_id: str = Field(min_length=1, max_length=64)
    reason: NurtureReason
    requalify_on: date | None = None
    note: str | None = None
    requested_at: Instant
    requested_by: Literal["router", "feedback"]
    cycle: int = Field(
        default=1, ge=1, description="The lead's sales cycle the request ends (see lead.scored)."
    )


class LeadStatusChangedV1(_Payload):
    """Sales moved the lead in its lifecycle."""

    lead_id: str = Field(min_length=1, max_length=64)
    from_status: LeadStatus | None
    to_status: LeadStatus
    rep_id: str | None
    reason: str | None = None
    note: str | None = None
    actor: str | None = None
    occurred_at: Instant
    working: bool = Field(description="Whether the lead still occupies its owner's capacity.")
    amount: float | None = Field(
        default=None,
        ge=0,
        description="The amount won (revenue, in the reporting currency); only with `won`.",
    )
    team_id: str | None = Field(default=None, description="The owner's team.")
    cycle: int = Field(default=1, ge=1, description="The lead's sales cycle (see lead.scored).")


class IcpPublishedV1(_Payload):
    """A new version of the ideal customer profile is in force for every score from now on."""

    version: int = Field(ge=1)
    name: str
    published_at: Instant
    grades: dict[str, float] = Field(description="Fit score thresholds of grades A, B and C.")


class CapacityLevel(StrEnum):
    """How full a sales team is, as marketing paces campaigns by it."""

    OK = "ok"
    BUSY = "busy"
    SATURATED = "saturated"


class CapacityChangedV1(_Payload):
    """A team's capacity level changed (or was seen for the first time): marketing should
    speed up or slow down the campaigns that feed it."""

    team_id: str = Field(min_length=1, max_length=64)
    team_name: str
    level: CapacityLevel = Field(
        description="ok; busy from the busy utilisation threshold; saturated when no active "
        "rep has a free slot or leads wait in the backlog."
    )
    previous_level: CapacityLevel | None = Field(
        description="The level last announced for the team; null the first time."
    )
    capacity: int = Field(ge=0, description="Working leads the team's active reps can hold.")
    working: int = Field(ge=0, description="Leads the team's reps work now.")
    headroom: int = Field(ge=0, description="Free slots of the team's active reps.")
    backlog: int = Field(ge=0, description="Leads waiting for room in the team.")
    utilisation: float = Field(
        ge=0, le=1, description="Share of the active reps' slots in use, 0-1 (1 when none)."
    )
    hours_until_saturation: float | None = Field(
        ge=0,
        description="Hours until no slot is free at the current intake and release rates; "
        "0 when already full, null when the team is not filling up.",
    )
    at: Instant = Field(description="When the new level was observed.")
