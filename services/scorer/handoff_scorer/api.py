"""The scorer's HTTP API: lead intake, lead lookup with score explanations, the ICP."""

from __future__ import annotations

import functools
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from handoff_runtime.auth import UNAUTHORIZED_RESPONSE, require_admin
from handoff_runtime.db import Database, UnitOfWork
from handoff_runtime.grouping import GroupCommit
from handoff_runtime.intake import FirstDelivery, json_body, respond_once
from handoff_runtime.problems import NotFound
from handoff_runtime.service import database
from handoff_runtime.webhooks import Delivery, parse_body, signed_delivery
from handoff_schemas import Contribution, LeadProfile, utcnow

from . import service
from .repository import ScorerRepository
from .scoring import IcpDocument

router = APIRouter(prefix="/v1")
# The ICP decides every score: reading it, publishing it and re-scoring with it take an admin
# token. Included into `router` at the end of the module.
admin = APIRouter(dependencies=[Depends(require_admin)], responses=UNAUTHORIZED_RESPONSE)
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
    outcome: str | None = Field(description="How sales closed the lead, if it has.")
    cycle: int = Field(
        description="Which time the lead goes to sales: 1, then one more each time it "
        "re-qualifies after nurture."
    )
    requalify_on: date | None = Field(
        description="For a lead sales disqualified or recycled to nurture: from this day (UTC) "
        "new engagement sends it back to sales; before it, engagement is only recorded."
    )
    received_at: datetime
    profile: dict[str, Any]
    score: ScorePublic | None
    score_history: list[ScorePublic]


class IcpPublic(BaseModel):
    """A published ICP version."""

    version: int
    published_at: datetime
    document: IcpDocument


Signed = Annotated[Delivery, Depends(signed_delivery)]
MAX_BATCH = 1000


class LeadBatch(BaseModel):
    """Up to 1,000 leads in one delivery (a webinar list, an import)."""

    leads: list[LeadProfile] = Field(min_length=1, max_length=MAX_BATCH)


class _LeadBatchEnvelope(BaseModel):
    """The batch as parsed: items are validated one by one, so one bad lead rejects only
    itself."""

    leads: list[Any] = Field(min_length=1, max_length=MAX_BATCH)


class BatchItem(BaseModel):
    """What happened to one lead of a batch."""

    index: int
    status: Literal["accepted", "updated", "rejected"]
    lead_id: str | None = None
    errors: list[dict[str, str]] | None = None


class BatchAccepted(BaseModel):
    """Per-lead results of a batch, in the order sent."""

    accepted: int
    updated: int
    rejected: int
    results: list[BatchItem]


_SIGNED_INTAKE: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid signature, or unknown webhook source"},
    409: {"description": "Idempotency key reused with a different body"},
    413: {"description": "Body larger than the configured limit"},
    422: {"description": "The body is not valid; each bad field is named"},
}


def new_people(db: Database) -> GroupCommit[service.NewPerson[LeadAccepted], LeadAccepted | None]:
    """The intake's group commit: new people's first deliveries, written together when
    they arrive together (see `handoff_runtime.grouping`)."""
    return db.group_commit(
        "new-people",
        functools.partial(service.accept_new_people, db),
        conflicts=service.conflicts,
    )


@router.post(
    "/leads",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=LeadAccepted,
    tags=["leads"],
    summary="Accept a lead from marketing automation",
    responses=_SIGNED_INTAKE,
    openapi_extra=json_body(LeadProfile, description="The lead, signed per Standard Webhooks."),
)
async def create_lead(delivery: Signed, db: Db) -> JSONResponse:
    """Store the lead and queue it for scoring and routing; 202 once it is durable. The same
    person sent again is merged into their lead (`status: updated`); if sales has closed that
    lead, the new engagement is only recorded, unless sales sent it to nurture and its
    re-qualify date has come: then it goes to sales again. A repeated delivery (same
    `webhook-id` or `Idempotency-Key`) gets the same answer and changes nothing."""
    profile = parse_body(LeadProfile, delivery.body)

    async def accept(uow: UnitOfWork) -> LeadAccepted:
        accepted = await service.accept_lead(uow, profile)
        return LeadAccepted(
            lead_id=accepted.lead_id,
            status="accepted" if accepted.is_new else "updated",
            received_at=accepted.received_at,
        )

    async def accept_new(first: FirstDelivery) -> LeadAccepted | None:
        person = service.new_person(
            db,
            profile,
            first,
            answer=lambda lead_id, at: LeadAccepted(
                lead_id=lead_id, status="accepted", received_at=at
            ),
        )
        return await new_people(db).submit(person)

    return await respond_once(
        db,
        delivery,
        status.HTTP_202_ACCEPTED,
        accept,
        outcome=lambda r: getattr(r, "status", ""),
        first=accept_new,
    )


@router.post(
    "/leads:batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchAccepted,
    tags=["leads"],
    summary="Accept up to 1,000 leads at once",
    responses=_SIGNED_INTAKE,
    openapi_extra=json_body(LeadBatch, description="The leads, signed per Standard Webhooks."),
)
async def create_leads(delivery: Signed, db: Db) -> JSONResponse:
    """Accept every valid lead of the batch and report, per lead, whether it was accepted,
    merged into a known lead, or rejected (with the fields at fault)."""
    batch = parse_body(_LeadBatchEnvelope, delivery.body)
    results: list[BatchItem] = []
    valid: list[tuple[int, LeadProfile]] = []
    for index, item in enumerate(batch.leads):
        try:
            valid.append((index, LeadProfile.model_validate(item)))
        except ValidationError as exc:
            errors = [
                {
                    "field": ".".join(["leads", str(index), *(str(p) for p in err["loc"])]),
                    "reason": err["msg"],
                }
                for err in exc.errors()
            ]
            results.append(BatchItem(index=index, status="rejected", errors=errors))

    async def accept(uow: UnitOfWork) -> BatchAccepted:
        accepted = await service.accept_leads(uow, [profile for _, profile in valid])
        for (index, _), lead in zip(valid, accepted, strict=True):
            status_ = "accepted" if lead.is_new else "updated"
            results.append(BatchItem(index=index, status=status_, lead_id=lead.lead_id))
        results.sort(key=lambda r: r.index)
        return BatchAccepted(
            accepted=sum(r.status == "accepted" for r in results),
            updated=sum(r.status == "updated" for r in results),
            rejected=sum(r.status == "rejected" for r in results),
            results=results,
        )

    return await respond_once(db, delivery, status.HTTP_202_ACCEPTED, accept)


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
        outcome=lead.outcome,
        cycle=lead.cycle,
        requalify_on=lead.requalify_on,
        received_at=lead.received_at,
        profile=lead.profile,
        score=history[0] if history else None,
        score_history=history,
    )


@admin.get("/icp", response_model=IcpPublic, tags=["icp"], summary="The current ICP")
async def get_icp(db: Db) -> IcpPublic:
    """The ideal customer profile every lead is scored against now."""
    async with db.unit_of_work() as uow:
        row = await ScorerRepository(uow.session).current_icp()
    if row is None:
        raise NotFound("no ICP has been published yet")
    return IcpPublic(version=row.version, published_at=row.published_at, document=row.document)


@admin.get(
    "/icp/versions", response_model=list[IcpPublic], tags=["icp"], summary="Every ICP version"
)
async def list_icp_versions(db: Db) -> list[IcpPublic]:
    """All published ICP versions, newest first."""
    async with db.unit_of_work() as uow:
        rows = await ScorerRepository(uow.session).icp_versions()
    return [
        IcpPublic(version=r.version, published_at=r.published_at, document=r.document) for r in rows
    ]


@admin.post(
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


class RescoreJobPublic(BaseModel):
    """Progress of re-scoring every scored lead with one ICP version."""

    id: str
    icp_version: int
    state: str
    total: int
    done: int
    changed: int = Field(description="Leads whose grade changed; each got a new lead.scored.")
    created_at: datetime
    finished_at: datetime | None


IcpVersionNumber = Annotated[
    int, Path(ge=1, le=2**31 - 1, description="An ICP version, as `GET /v1/icp/versions` lists.")
]


@admin.post(
    "/icp/{version}/rescore",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RescoreJobPublic,
    tags=["icp"],
    summary="Re-score every scored lead with an ICP version",
)
async def rescore(version: IcpVersionNumber, db: Db) -> RescoreJobPublic:
    """Start re-scoring in the background; leads whose grade changes are announced again
    with `lead.scored`. Follow progress at `GET /v1/rescore-jobs/{id}`."""
    async with db.unit_of_work() as uow:
        job = await service.start_rescore(uow, version)
        public = RescoreJobPublic.model_validate(job, from_attributes=True)
    return public


@admin.get(
    "/rescore-jobs/{job_id}",
    response_model=RescoreJobPublic,
    tags=["icp"],
    summary="Re-score progress",
)
async def rescore_progress(job_id: str, db: Db) -> RescoreJobPublic:
    """How far a re-score job has come."""
    async with db.unit_of_work() as uow:
        job = await ScorerRepository(uow.session).rescore_job(job_id)
        if job is None:
            raise NotFound(f"no re-score job {job_id}")
        return RescoreJobPublic.model_validate(job, from_attributes=True)


# include_router copies the routes defined so far, so this comes after every admin route.
router.include_router(admin)
