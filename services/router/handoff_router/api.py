"""The router's HTTP API: teams, reps, capacity headroom, backlog, routing history."""

from __future__ import annotations

from datetime import datetime, time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Request, status
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)

from handoff_runtime.auth import UNAUTHORIZED_RESPONSE, require_admin
from handoff_runtime.db import Database
from handoff_runtime.problems import NotFound
from handoff_runtime.service import database, runtime_of
from handoff_schemas import CapacityLevel, Email, FitGrade, Instant, utcnow

from . import service
from .models import Rep
from .repository import RouterRepository
from .settings import RouterSettings
from .workers import team_loads, thresholds_of

router = APIRouter(prefix="/v1")
# Teams, reps and routing rules decide who gets which leads: reading or changing them takes an
# admin token. Included into `router` at the end of the module.
admin = APIRouter(dependencies=[Depends(require_admin)], responses=UNAUTHORIZED_RESPONSE)
Db = Annotated[Database, Depends(database)]


SizeBand = Literal["small", "mid", "large", "enterprise"]
CountryCode = Annotated[str, Field(pattern=r"^[A-Za-z]{2}$", description="ISO 3166-1 alpha-2")]
Name = Annotated[str, Field(min_length=1, max_length=100)]
LanguageCode = Annotated[str, Field(pattern=r"^[A-Za-z]{2}$", description="ISO 639-1")]


class Conditions(BaseModel):
    """Which leads a rule takes; an empty list takes every value."""

    model_config = ConfigDict(extra="forbid")

    countries: list[CountryCode] = Field(default_factory=list, max_length=300)
    industries: list[Name] = Field(default_factory=list, max_length=300)
    size_bands: list[SizeBand] = Field(default_factory=list)
    grades: list[FitGrade] = Field(default_factory=list)
    product_interests: list[Name] = Field(default_factory=list, max_length=300)
    languages: list[LanguageCode] = Field(default_factory=list, max_length=100)


class RuleIn(BaseModel):
    """One routing rule: leads matching all its conditions go to its team."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    team_id: str = Field(min_length=1, max_length=64)
    conditions: Conditions = Field(default_factory=Conditions)


class Rules(BaseModel):
    """The ordered routing rules; the first match wins, else the fallback team."""

    model_config = ConfigDict(extra="forbid")

    rules: list[RuleIn] = Field(max_length=200)


class TeamCreate(BaseModel):
    """A new sales team."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    manager_name: str | None = Field(default=None, max_length=200)
    manager_email: Email | None = None
    respect_working_hours: StrictBool = Field(
        default=False, description="Route only to reps within their working hours."
    )


class TeamUpdate(BaseModel):
    """Changes to a team; omitted fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    manager_name: str | None = Field(default=None, max_length=200)
    manager_email: Email | None = None
    respect_working_hours: StrictBool | None = None
    is_default: Literal[True] | None = Field(
        default=None, description="true makes this the fallback team for leads no rule matches."
    )


class TeamPublic(BaseModel):
    """A sales team."""

    id: str
    name: str
    is_default: bool
    manager_name: str | None
    manager_email: str | None
    respect_working_hours: bool
    created_at: datetime


class WorkingHoursIn(BaseModel):
    """Local working hours on ISO weekdays (1 = Monday) in the rep's time zone."""

    model_config = ConfigDict(extra="forbid")

    start: time
    end: time
    days: list[Annotated[StrictInt, Field(ge=1, le=7)]] = Field(
        default=[1, 2, 3, 4, 5], min_length=1
    )

    @model_validator(mode="after")
    def _start_before_end(self) -> WorkingHoursIn:
        if self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class OutOfOffice(BaseModel):
    """A period the rep takes no new leads."""

    model_config = ConfigDict(extra="forbid")

    start: Instant
    end: Instant

    @model_validator(mode="after")
    def _start_before_end(self) -> OutOfOffice:
        if self.start >= self.end:
            raise ValueError("start must be before end")
        return self


def _known_zone(value: str | None) -> str | None:
    if value is not None:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
    return value


TimeZone = Annotated[str, Field(max_length=64), AfterValidator(_known_zone)]


class RepProfile(BaseModel):
    """What a rep covers and when they take leads."""

    model_config = ConfigDict(extra="forbid")

    daily_cap: StrictInt | None = Field(
        default=None, ge=0, le=10_000, description="New leads a day."
    )
    timezone: TimeZone = "UTC"
    working_hours: WorkingHoursIn | None = None
    out_of_office: list[OutOfOffice] = Field(default_factory=list, max_length=100)
    countries: list[CountryCode] = Field(default_factory=list, max_length=300)
    industries: list[Name] = Field(default_factory=list, max_length=300)
    size_bands: list[SizeBand] = Field(default_factory=list)
    languages: list[LanguageCode] = Field(default_factory=list, max_length=100)


class RepCreate(RepProfile):
    """A new rep and how many working leads they can hold at once."""

    team_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    email: Email
    capacity: StrictInt = Field(ge=0, le=10_000)
    weight: StrictFloat = Field(default=1.0, gt=0, le=100)
    active: StrictBool = True


class RepUpdate(BaseModel):
    """Changes to a rep; omitted fields stay as they are (null clears daily_cap and
    working_hours)."""

    model_config = ConfigDict(extra="forbid")

    capacity: StrictInt | None = Field(default=None, ge=0, le=10_000)
    weight: StrictFloat | None = Field(default=None, gt=0, le=100)
    active: StrictBool | None = None
    daily_cap: StrictInt | None = Field(default=None, ge=0, le=10_000)
    timezone: TimeZone | None = None
    working_hours: WorkingHoursIn | None = None
    out_of_office: list[OutOfOffice] | None = Field(default=None, max_length=100)
    countries: list[CountryCode] | None = Field(default=None, max_length=300)
    industries: list[Name] | None = Field(default=None, max_length=300)
    size_bands: list[SizeBand] | None = None
    languages: list[LanguageCode] | None = Field(default=None, max_length=100)


class RepPublic(BaseModel):
    """A rep with their load and what they cover."""

    id: str
    team_id: str
    name: str
    email: str
    capacity: int
    working: int
    headroom: int
    weight: float
    active: bool
    daily_cap: int | None
    timezone: str
    working_hours: dict[str, Any] | None
    out_of_office: list[dict[str, Any]]
    countries: list[str]
    industries: list[str]
    size_bands: list[str]
    languages: list[str]
    last_assigned_at: datetime | None


class TeamCapacity(BaseModel):
    """How much room a team has and how fast it fills: what marketing paces campaigns by."""

    team_id: str
    name: str
    capacity: int = Field(description="Working leads (count) the team's active reps can hold.")
    working: int = Field(
        description="Leads (count) the team's reps work now: assigned, accepted, contacted."
    )
    headroom: int = Field(
        description="Free slots (count) of the team's active reps: leads it can take now."
    )
    backlog: int = Field(description="Leads (count) waiting for room in the team.")
    oldest_backlog_age_seconds: float | None = Field(
        description="Seconds the oldest queued lead has waited; null when none waits."
    )
    utilisation: float = Field(
        ge=0,
        le=1,
        description="Share of the active reps' slots in use, 0-1 (1 when the team has no "
        "capacity).",
    )
    intake_per_hour: float = Field(
        ge=0,
        description="New leads per hour assigned or queued to the team, averaged over the last "
        "rate_window_hours (backlog drains and reassignments are not new leads).",
    )
    release_per_hour: float = Field(
        ge=0,
        description="Slots per hour sales freed (leads that left the working statuses), "
        "averaged over the last rate_window_hours.",
    )
    hours_until_saturation: float | None = Field(
        ge=0,
        description="Hours until no slot is free at the current intake and release rates: "
        "headroom / (intake_per_hour - release_per_hour); 0 when already full; null when the "
        "team is not filling up.",
    )
    level: CapacityLevel = Field(
        description="ok; busy from busy_utilisation; saturated when no slot is free or leads "
        "wait in the backlog. Changes are announced as handoff.capacity.changed.v1."
    )
    reps: list[RepPublic]


class CapacityPublic(BaseModel):
    """Capacity headroom of every team."""

    teams: list[TeamCapacity]
    as_of: datetime
    rate_window_hours: float = Field(
        description="The hours the intake and release rates are averaged over."
    )
    busy_utilisation: float = Field(description="Utilisation (0-1) from which a team is busy.")


class BacklogItem(BaseModel):
    """A lead waiting for room, in drain order."""

    lead_id: str
    team_id: str
    grade: str
    score: float
    queued_at: datetime


class RoutingHistory(BaseModel):
    """Where a lead stands with the router and every decision about it, in every sales
    cycle (each decision names its `cycle`)."""

    lead_id: str
    state: str
    team_id: str | None
    rep_id: str | None
    cycle: int = Field(
        description="The lead's current sales cycle: one more each time it re-qualifies."
    )
    decisions: list[dict[str, Any]]


def _rep_public(rep: Rep) -> RepPublic:
    return RepPublic(
        id=rep.id,
        team_id=rep.team_id,
        name=rep.name,
        email=rep.email,
        capacity=rep.capacity,
        working=rep.working,
        headroom=max(0, rep.capacity - rep.working) if rep.active else 0,
        weight=rep.weight,
        active=rep.active,
        daily_cap=rep.daily_cap,
        timezone=rep.timezone,
        working_hours=rep.working_hours,
        out_of_office=rep.out_of_office,
        countries=rep.countries,
        industries=rep.industries,
        size_bands=rep.size_bands,
        languages=rep.languages,
        last_assigned_at=rep.last_assigned_at,
    )


@admin.post(
    "/teams", status_code=status.HTTP_201_CREATED, response_model=TeamPublic, tags=["teams"]
)
async def create_team(body: TeamCreate, db: Db) -> TeamPublic:
    """Create a sales team (the first one receives leads by default)."""
    async with db.unit_of_work() as uow:
        team = await service.create_team(uow, **body.model_dump(mode="json"))
    return TeamPublic.model_validate(team, from_attributes=True)


@admin.patch("/teams/{team_id}", response_model=TeamPublic, tags=["teams"])
async def update_team(team_id: str, body: TeamUpdate, db: Db) -> TeamPublic:
    """Change a team's name, manager or working-hours policy."""
    async with db.unit_of_work() as uow:
        team = await service.update_team(
            uow, team_id, **body.model_dump(mode="json", include=body.model_fields_set)
        )
        public = TeamPublic.model_validate(team, from_attributes=True)
    return public


@admin.get("/routing-rules", response_model=Rules, tags=["teams"])
async def get_rules(db: Db) -> Rules:
    """The ordered routing rules."""
    async with db.unit_of_work() as uow:
        rows = await RouterRepository(uow.session).rules()
        return Rules(
            rules=[
                RuleIn(name=r.name, team_id=r.team_id, conditions=Conditions(**r.conditions))
                for r in rows
            ]
        )


@admin.put("/routing-rules", response_model=Rules, tags=["teams"])
async def put_rules(body: Rules, db: Db) -> Rules:
    """Replace the ordered routing rules; leads matching no rule go to the fallback team."""
    async with db.unit_of_work() as uow:
        await service.replace_rules(uow, [r.model_dump(mode="json") for r in body.rules])
    return body


@admin.get("/teams", response_model=list[TeamPublic], tags=["teams"])
async def list_teams(db: Db) -> list[TeamPublic]:
    """Every sales team."""
    async with db.unit_of_work() as uow:
        teams = await RouterRepository(uow.session).teams()
    return [TeamPublic.model_validate(t, from_attributes=True) for t in teams]


@admin.post("/reps", status_code=status.HTTP_201_CREATED, response_model=RepPublic, tags=["reps"])
async def create_rep(body: RepCreate, db: Db) -> RepPublic:
    """Add a rep to a team; if leads are queued and the rep has room they are assigned now."""
    async with db.unit_of_work() as uow:
        rep = await service.create_rep(uow, **body.model_dump(mode="json"))
        public = _rep_public(rep)
    return public


@admin.get("/reps", response_model=list[RepPublic], tags=["reps"])
async def list_reps(db: Db) -> list[RepPublic]:
    """Every rep with capacity, working leads and headroom."""
    async with db.unit_of_work() as uow:
        reps = await RouterRepository(uow.session).reps()
        return [_rep_public(r) for r in reps]


@admin.patch("/reps/{rep_id}", response_model=RepPublic, tags=["reps"])
async def update_rep(rep_id: str, body: RepUpdate, db: Db) -> RepPublic:
    """Change a rep's capacity, weight or availability; new room drains the backlog at once."""
    async with db.unit_of_work() as uow:
        # The fields the caller sent, each in full: `exclude_unset` would also drop the
        # defaults inside a nested value (working hours sent without `days`).
        sent = body.model_dump(mode="json", include=body.model_fields_set)
        rep = await service.update_rep(uow, rep_id, **sent)
        public = _rep_public(rep)
    return public


async def _settings(request: Request) -> RouterSettings:
    settings = runtime_of(request).settings
    assert isinstance(settings, RouterSettings)
    return settings


Settings = Annotated[RouterSettings, Depends(_settings)]


@router.get("/capacity", response_model=CapacityPublic, tags=["capacity"])
async def capacity(db: Db, settings: Settings) -> CapacityPublic:
    """Per team: capacity, working, headroom, backlog size and the oldest queued lead's age,
    utilisation, intake and release rates over the last hours, projected hours until
    saturation and the level (ok, busy, saturated); and every rep's load."""
    now = utcnow()
    thresholds = thresholds_of(settings)
    window = settings.rate_window_hours
    async with db.unit_of_work() as uow:
        repo = RouterRepository(uow.session)
        loads = await team_loads(repo, now=now, window_hours=window)
        reps = await repo.reps()
        members: dict[str, list[RepPublic]] = {}
        for rep in reps:
            members.setdefault(rep.team_id, []).append(_rep_public(rep))
    return CapacityPublic(
        teams=[
            TeamCapacity(
                team_id=load.team_id,
                name=load.name,
                capacity=load.capacity,
                working=load.working,
                headroom=load.headroom,
                backlog=load.backlog,
                oldest_backlog_age_seconds=load.oldest_age_seconds(now),
                utilisation=load.utilisation,
                intake_per_hour=load.intake_per_hour,
                release_per_hour=load.release_per_hour,
                hours_until_saturation=load.hours_until_saturation,
                level=load.level(thresholds),
                reps=members.get(load.team_id, []),
            )
            for load in loads
        ],
        as_of=now,
        rate_window_hours=window,
        busy_utilisation=thresholds.busy,
    )


@router.get("/backlog", response_model=list[BacklogItem], tags=["capacity"])
async def backlog(db: Db, team_id: str | None = None) -> list[BacklogItem]:
    """Queued leads in the order they will be assigned."""
    async with db.unit_of_work() as uow:
        entries = await RouterRepository(uow.session).backlog(team_id)
    return [BacklogItem.model_validate(e, from_attributes=True) for e in entries]


@router.get("/leads/{lead_id}/routing", response_model=RoutingHistory, tags=["leads"])
async def lead_routing(lead_id: str, db: Db) -> RoutingHistory:
    """Where the lead stands and every routing decision with its reasons."""
    async with db.unit_of_work() as uow:
        repo = RouterRepository(uow.session)
        routed = await repo.routed_lead(lead_id)
        if routed is None:
            raise NotFound(f"the router has not seen lead {lead_id}")
        decisions = await repo.decisions(lead_id)
    return RoutingHistory(
        lead_id=lead_id,
        state=routed.state,
        team_id=routed.team_id,
        rep_id=routed.rep_id,
        cycle=routed.cycle,
        decisions=[
            {"outcome": d.outcome, "decided_at": d.decided_at, "cycle": d.cycle, **d.decision}
            for d in decisions
        ],
    )


# include_router copies the routes defined so far, so this comes after every admin route.
router.include_router(admin)
