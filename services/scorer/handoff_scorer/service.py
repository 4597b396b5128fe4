"""The scorer's use cases: accept a lead, score it, publish an ICP version."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa

from handoff_runtime.db import UnitOfWork
from handoff_runtime.problems import DomainError
from handoff_schemas import (
    LEAD_CREATED,
    LEAD_SCORED,
    LeadCreatedV1,
    LeadProfile,
    LeadScoredV1,
    utcnow,
)

from .models import IcpVersion, Lead, LeadScore
from .repository import ScorerRepository
from .scoring import IcpDocument, score_lead


class NoIcpPublished(DomainError):
    """Leads cannot be scored before an ICP is published."""

    status = 409
    type = "no-icp"
    title = "No ICP published"


async def accept_lead(uow: UnitOfWork, profile: LeadProfile) -> Lead:
    """Store a lead as received and announce it with `lead.created` in the same transaction."""
    lead = Lead(
        id=uuid.uuid4().hex,
        email=str(profile.email).lower(),
        profile=profile.model_dump(mode="json"),
        received_at=utcnow(),
    )
    ScorerRepository(uow.session).add(lead)
    await uow.publish(
        LeadCreatedV1(lead_id=lead.id, received_at=lead.received_at, lead=profile),
        topic=LEAD_CREATED.name,
        subject=lead.id,
    )
    return lead


async def score_created_lead(uow: UnitOfWork, created: LeadCreatedV1) -> LeadScoredV1:
    """Score a lead against the current ICP, record the score and explanation, and announce
    `lead.scored`. A lead put on the topic by another producer is stored first."""
    repo = ScorerRepository(uow.session)
    lead = await repo.get_lead(created.lead_id, for_update=True)
    if lead is None:
        lead = Lead(
            id=created.lead_id,
            email=str(created.lead.email).lower(),
            profile=created.lead.model_dump(mode="json"),
            received_at=created.received_at,
        )
        repo.add(lead)
    icp_row = await repo.current_icp()
    if icp_row is None:
        raise NoIcpPublished("publish an ICP (POST /v1/icp) before leads can be scored")
    icp = IcpDocument.model_validate(icp_row.document)
    now = utcnow()
    result = score_lead(created.lead, icp, now=now)
    repo.add(
        LeadScore(
            lead_id=lead.id,
            icp_version=icp_row.version,
            score=result.score,
            grade=result.grade.value,
            engagement_level=result.engagement_level,
            contributions=[c.model_dump(mode="json") for c in result.contributions],
            disqualifiers=list(result.disqualifiers),
            scored_at=now,
        )
    )
    lead.status = "scored"
    lead.score = result.score
    lead.grade = result.grade.value
    lead.engagement_level = result.engagement_level
    lead.icp_version = icp_row.version
    lead.scored_at = now
    scored = LeadScoredV1(
        lead_id=lead.id,
        icp_version=icp_row.version,
        score=result.score,
        grade=result.grade,
        engagement_level=result.engagement_level,
        contributions=list(result.contributions),
        disqualifiers=list(result.disqualifiers),
        scored_at=now,
        received_at=created.received_at,
        lead=created.lead,
    )
    await uow.publish(scored, topic=LEAD_SCORED.name, subject=lead.id)
    return scored


async def publish_icp(uow: UnitOfWork, document: IcpDocument, *, now: datetime) -> IcpVersion:
    """Store a new ICP version (the next number); it is current from this commit on."""
    # One publisher at a time, so two concurrent publishes cannot take the same number.
    await uow.session.execute(sa.text("LOCK TABLE scorer.icp_versions IN EXCLUSIVE MODE"))
    repo = ScorerRepository(uow.session)
    current = await repo.current_icp()
    row = IcpVersion(
        version=(current.version + 1) if current else 1,
        document=document.model_dump(mode="json"),
        published_at=now,
    )
    repo.add(row)
    return row
