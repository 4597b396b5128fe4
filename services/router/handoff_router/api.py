"""The router's HTTP API: teams, reps, capacity headroom, backlog, routing history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel, EmailStr, Field

from handoff_runtime.db import Database
from handoff_runtime.problems import NotFound
from handoff_runtime.service import database
from handoff_schemas import utcnow

from . import service
from .models import Rep
from .repository import RouterRepository

router = APIRouter(prefix="/v1")
Db = Annotated[Database, Depends(database)]


class TeamCreate(BaseModel):
    """A new sales team."""

    name: str = Field(min_length=1, max_length=200)


class TeamPublic(BaseModel):
    """A sales team."""

    id: str
    name: str
    is_default: bool
    created_at: datetime


class RepCreate(BaseModel):
    """A new rep and how many working leads they can hold at once."""

    team_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr
    capacity: int = Field(ge=0, le=10_000)
    weight: float = Field(default=1.0, gt=0, le=100)
    active: bool = True


class RepUpdate(BaseModel):
    """Changes to a rep; omitted fields stay as they are."""

    capacity: int | None = Field(default=None, ge=0, le=10_000)
    weight: float | None = Field(default=None, gt=0, le=100)
    active: bool | None = None


class RepPublic(BaseModel):
    """A rep with their load."""

    id: str
    team_id: str
    name: str
    email: str
    capacity: int
    working: int
    headroom: int
    weight: float
    active: bool
    last_assigned_at: datetime | None


class TeamCapacity(BaseModel):
    """How much room a team has: what marketing paces campaigns by."""

    team_id: str
    name: str
    capacity: int = Field(description="Working leads the team's active reps can hold.")
    working: int
    headroom: int
    backlog: int
    oldest_backlog_age_seconds: float | None
    reps: list[RepPublic]


class CapacityPublic(BaseModel):
    """Capacity headroom of every team."""

    teams: list[TeamCapacity]
    as_of: datetime


class BacklogItem(BaseModel):
    """A lead waiting for room, in drain order."""

    lead_id: str
    team_id: str
    grade: str
    score: float
    queued_at: datetime


class RoutingHistory(BaseModel):
    """Where a lead stands with the router and every decision about it."""

    lead_id: str
    state: str
    team_id: str | None
    rep_id: str | None
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
        last_assigned_at=rep.last_assigned_at,
    )


@router.post(
    "/teams", status_code=status.HTTP_201_CREATED, response_model=TeamPublic, tags=["teams"]
)
async def create_team(body: TeamCreate, db: Db) -> TeamPublic:
    """Create a sales team (the first one receives leads by default)."""
    async with db.unit_of_work() as uow:
        team = await service.create_team(uow, body.name)
    return TeamPublic.model_validate(team, from_attributes=True)


@router.get("/teams", response_model=list[TeamPublic], tags=["teams"])
async def list_teams(db: Db) -> list[TeamPublic]:
    """Every sales team."""
    async with db.unit_of_work() as uow:
        teams = await RouterRepository(uow.session).teams()
    return [TeamPublic.model_validate(t, from_attributes=True) for t in teams]


@router.post("/reps", status_code=status.HTTP_201_CREATED, response_model=RepPublic, tags=["reps"])
async def create_rep(body: RepCreate, db: Db) -> RepPublic:
    """Add a rep to a team; if leads are queued and the rep has room they are assigned now."""
    async with db.unit_of_work() as uow:
        rep = await service.create_rep(uow, **body.model_dump())
        public = _rep_public(rep)
    return public


@router.get("/reps", response_model=list[RepPublic], tags=["reps"])
async def list_reps(db: Db) -> list[RepPublic]:
    """Every rep with capacity, working leads and headroom."""
    async with db.unit_of_work() as uow:
        reps = await RouterRepository(uow.session).reps()
        return [_rep_public(r) for r in reps]


@router.patch("/reps/{rep_id}", response_model=RepPublic, tags=["reps"])
async def update_rep(rep_id: str, body: RepUpdate, db: Db) -> RepPublic:
    """Change a rep's capacity, weight or availability; new room drains the backlog at once."""
    async with db.unit_of_work() as uow:
        rep = await service.update_rep(uow, rep_id, **body.model_dump())
        public = _rep_public(rep)
    return public


@router.get("/capacity", response_model=CapacityPublic, tags=["capacity"])
async def capacity(db: Db) -> CapacityPublic:
    """Per team: capacity, working, headroom, backlog size and the oldest queued lead's age."""
    now = utcnow()
    async with db.unit_of_work() as uow:
        repo = RouterRepository(uow.session)
        teams = await repo.teams()
        reps = await repo.reps()
        backlog = await repo.backlog_stats()
    result = []
    for team in teams:
        members = [_rep_public(r) for r in reps if r.team_id == team.id]
        active = [r for r in members if r.active]
        waiting, oldest = backlog.get(team.id, (0, None))
        result.append(
            TeamCapacity(
                team_id=team.id,
                name=team.name,
                capacity=sum(r.capacity for r in active),
                working=sum(r.working for r in members),
                headroom=sum(r.headroom for r in active),
                backlog=waiting,
                oldest_backlog_age_seconds=(now - oldest).total_seconds() if oldest else None,
                reps=members,
            )
        )
    return CapacityPublic(teams=result, as_of=now)


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
        decisions=[
            {"outcome": d.outcome, "decided_at": d.decided_at, **d.decision} for d in decisions
        ],
    )
