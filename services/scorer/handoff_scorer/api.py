"""The scorer's HTTP API: lead intake, lead lookup with score explanations, the ICP."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel

from handoff_runtime.db import Database
from handoff_runtime.problems import NotFound
from handoff_runtime.service import database
from handoff_schemas import Contribution, LeadProfile, utcnow

from . import service
from .repository import ScorerRepository
from .scoring import IcpDocument

router = APIRouter(prefix="/v1")
Db = Annotated[Database, Depends(database)]


class LeadAccepted(BaseModel):
    """The answer to an accepted lead: it is stored and will be scored and routed.
    `status` is `accepted` for a new person, `updated` when merged into a known lead."""

    lead_id: str
    status: str
    received_at: datetime


class ScorePublic(BaseModel):
    """One scoring of a lead, with why it got its score."""

    icp_version: int
    score: float
    grade: str
    engagement_level: int
    contributions: list[Contribution]
    disqualifiers: list[str]
    scored_at: datetime


class LeadPublic(BaseModel):
    """A lead as the scorer knows it: the profile, the latest score and the score history."""

    lead_id: str
    status: str
    received_at: datetime
    profile: dict[str, Any]
    score: ScorePublic | None
    score_history: list[ScorePublic]


class IcpPublic(BaseModel):
    """A published ICP version."""

    version: int
    published_at: datetime
    document: IcpDocument


@router.post(
    "/leads",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=LeadAccepted,
    tags=["leads"],
    summary="Accept a lead from marketing automation",
)
async def create_lead(profile: LeadProfile, db: Db) -> LeadAccepted:
    """Store the lead and queue it for scoring and routing. 202: it is durable now."""
    async with db.unit_of_work() as uow:
        lead, is_new = await service.accept_lead(uow, profile)
    return LeadAccepted(
        lead_id=lead.id, status="accepted" if is_new else "updated", received_at=lead.received_at
    )


@router.get(
    "/leads/{lead_id}", response_model=LeadPublic, tags=["leads"], summary="A lead and its scores"
)
async def get_lead(lead_id: str, db: Db) -> LeadPublic:
    """The lead, its current score with the per-criterion explanation, and every past score."""
    async with db.unit_of_work() as uow:
        repo = ScorerRepository(uow.session)
        lead = await repo.get_lead(lead_id)
        if lead is None:
            raise NotFound(f"no lead {lead_id}")
        history = [
            ScorePublic(
                icp_version=s.icp_version,
                score=s.score,
                grade=s.grade,
                engagement_level=s.engagement_level,
                contributions=[Contribution.model_validate(c) for c in s.contributions],
                disqualifiers=s.disqualifiers,
                scored_at=s.scored_at,
            )
            for s in await repo.score_history(lead_id)
        ]
    return LeadPublic(
        lead_id=lead.id,
        status=lead.status,
        received_at=lead.received_at,
        profile=lead.profile,
        score=history[0] if history else None,
        score_history=history,
    )


@router.get("/icp", response_model=IcpPublic, tags=["icp"], summary="The current ICP")
async def get_icp(db: Db) -> IcpPublic:
    """The ideal customer profile every lead is scored against now."""
    async with db.unit_of_work() as uow:
        row = await ScorerRepository(uow.session).current_icp()
    if row is None:
        raise NotFound("no ICP has been published yet")
    return IcpPublic(version=row.version, published_at=row.published_at, document=row.document)


@router.get(
    "/icp/versions", response_model=list[IcpPublic], tags=["icp"], summary="Every ICP version"
)
async def list_icp_versions(db: Db) -> list[IcpPublic]:
    """All published ICP versions, newest first."""
    async with db.unit_of_work() as uow:
        rows = await ScorerRepository(uow.session).icp_versions()
    return [
        IcpPublic(version=r.version, published_at=r.published_at, document=r.document) for r in rows
    ]


@router.post(
    "/icp",
    status_code=status.HTTP_201_CREATED,
    response_model=IcpPublic,
    tags=["icp"],
    summary="Publish a new ICP version",
)
async def publish_icp(document: IcpDocument, db: Db) -> IcpPublic:
    """Validate and publish a new ICP version; leads scored from now on use it."""
    async with db.unit_of_work() as uow:
        row = await service.publish_icp(uow, document, now=utcnow())
    return IcpPublic(version=row.version, published_at=row.published_at, document=document)
