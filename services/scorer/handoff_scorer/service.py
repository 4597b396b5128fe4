"""The scorer's use cases: accept a lead, score it, publish an ICP version, re-score."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel

from handoff_runtime.db import Database, UnitOfWork
from handoff_runtime.idempotency import DeliveryInProgress
from handoff_runtime.intake import FirstDelivery, first_delivery_values
from handoff_runtime.problems import DomainError, NotFound
from handoff_schemas import (
    ICP,
    LEAD_CREATED,
    LEAD_SCORED,
    IcpPublishedV1,
    LeadCreatedV1,
    LeadNurtureRequestedV1,
    LeadProfile,
    LeadScoredV1,
    LeadStatusChangedV1,
    utcnow,
)

from .identity import account_domain, merge_profiles, normalise_email
from .models import IcpVersion, Lead, RescoreJob
from .repository import LEAD_SCORES, ScorerRepository
from .requalification import CLOSED_BY_SALES, should_requalify
from .scoring import IcpDocument, score_lead


class NoIcpPublished(DomainError):
    """Leads cannot be scored before an ICP is published."""

    status = 409
    type = "no-icp"
    title = "No ICP published"


AnswerT = TypeVar("AnswerT", bound=BaseModel)

Announce = Literal["always", "grade_changed", "never"]
"""When a scoring is announced with `lead.scored`."""


@dataclass(frozen=True)
class Accepted:
    """A lead the intake stored: its id and normalised email, whether it is new (else merged
    into the lead already known for the email), and when the lead was first received."""

    lead_id: str
    email: str
    is_new: bool
    received_at: datetime


async def accept_lead(uow: UnitOfWork, received: LeadProfile) -> Accepted:
    """Store a lead as received — a new person, or merged into the lead already known for
    that email — and announce it with `lead.created` in the same transaction."""
    [accepted] = await accept_leads(uow, [received])
    return accepted


async def accept_leads(uow: UnitOfWork, received: Sequence[LeadProfile]) -> list[Accepted]:
    """Store leads as received and announce each with `lead.created`, in order, as one at a
    time would: a new person is stored, one known (before the batch or earlier in it) is
    merged into. The new people are inserted in one statement and the leads merged into are
    read and locked in another, both in email order (so concurrent batches take the person
    index's locks in the same order)."""
    repo = ScorerRepository(uow.session)
    now = utcnow()
    profiles = [r.model_copy(update={"email": normalise_email(str(r.email))}) for r in received]
    first: dict[str, int] = {}
    for index, profile in enumerate(profiles):
        first.setdefault(str(profile.email), index)
    fresh = {email: uuid.uuid4().hex for email in first}
    inserted = await repo.insert_leads_if_new(
        [
            {
                "id": fresh[email],
                "email": email,
                "profile": profiles[index].model_dump_json(),
                "received_at": now,
            }
            for email, index in sorted(first.items())
        ]
    )
    merged_into = {
        str(profile.email)
        for index, profile in enumerate(profiles)
        if str(profile.email) not in inserted or first[str(profile.email)] != index
    }
    known = await repo.get_leads_by_email(sorted(merged_into), for_update=True)
    accepted: list[Accepted] = []
    for index, profile in enumerate(profiles):
        email = str(profile.email)
        if email in inserted and first[email] == index:
            stored = profile.model_dump(mode="json")
            accepted.append(Accepted(fresh[email], email, True, now))
        else:
            lead = known[email]
            merged = merge_profiles(LeadProfile.model_validate(lead.profile), profile)
            lead.profile = stored = merged.model_dump(mode="json")
            accepted.append(Accepted(lead.id, email, False, lead.received_at))
        await uow.publish(
            LeadCreatedV1(
                lead_id=accepted[-1].lead_id,
                received_at=accepted[-1].received_at,
                lead=LeadProfile.model_validate(stored),
            ),
            topic=LEAD_CREATED.name,
            subject=accepted[-1].lead_id,
        )
    return accepted


@dataclass(frozen=True)
class NewPerson(Generic[AnswerT]):
    """A first delivery of a person not known yet, ready to be written with others
    (`accept_new_people`): its statement values, and the answer it gets if written."""

    key: str
    email: str
    lead_id: str
    values: dict[str, Any]
    answer: AnswerT


def new_person(
    db: Database,
    received: LeadProfile,
    delivery: FirstDelivery,
    answer: Callable[[str, datetime], AnswerT],
) -> NewPerson[AnswerT]:
    """A delivery for `accept_new_people`, made in the request (the announcement carries
    the request's trace): a new lead id, the normalised profile, the answer
    `answer(lead_id, received_at)` and the `lead.created` outbox row."""
    lead_id, received_at = uuid.uuid4().hex, utcnow()
    email = normalise_email(str(received.email))
    profile = received.model_copy(update={"email": email})
    response = answer(lead_id, received_at)
    _, row = db.announcement(
        LeadCreatedV1(lead_id=lead_id, received_at=received_at, lead=profile),
        topic=LEAD_CREATED.name,
        subject=lead_id,
    )
    values = {
        "lead_id": lead_id,
        "email": email,
        "profile": profile.model_dump_json(),
        "received_at": received_at,
        **first_delivery_values(delivery, response, row),
    }
    return NewPerson(delivery.key, email, lead_id, values, response)


def conflicts(person: NewPerson[Any]) -> tuple[tuple[str, str], ...]:
    """What two deliveries written in one statement must not share: the key, the person."""
    return (("key", person.key), ("email", person.email))


async def accept_new_people(
    db: Database, people: Sequence[NewPerson[AnswerT]]
) -> list[AnswerT | DeliveryInProgress | None]:
    """The common case of `accept_lead` — a person not known yet, in a delivery whose key
    is new — for several deliveries (distinct keys and people, see `conflicts`) in one
    transaction and one statement: each one's lead, its key claimed with its answer, and
    `lead.created`. Each gets its answer, or None having written nothing when the person is
    known or the key claimed (`accept_lead` and the idempotency claim then take over).

    A concurrent delivery of the same key that has not committed yet cannot be told apart
    here: the lead just written is removed again and the delivery refused as in progress
    (409, retry later)."""
    async with db.unit_of_work() as uow:
        repo = ScorerRepository(uow.session)
        # In email order: two groups (of two replicas) then take the unique index's locks in
        # the same order and cannot deadlock on each other's people.
        in_order = sorted(people, key=lambda person: person.email)
        outcomes = await repo.insert_new_leads_first_delivery(
            uow.tables, [person.values for person in in_order]
        )
        # Written, but its key was claimed meanwhile by a transaction not committed then.
        raced = {p.key for p in people if outcomes[p.key] == (True, False)}
        if raced:
            await repo.delete_leads([p.lead_id for p in people if p.key in raced])
        uow.announced(sum(announced for _, announced in outcomes.values()))
    return [
        DeliveryInProgress(
            "A delivery with this idempotency key is still being processed; retry later.",
            key=person.key,
        )
        if person.key in raced
        else (person.answer if outcomes[person.key][1] else None)
        for person in people
    ]


async def _lead_for(
    uow: UnitOfWork, lead_id: str, received: LeadProfile, *, received_at: datetime
) -> tuple[Lead, bool]:
    """The one lead of this person, created with `lead_id` if new, else merged and locked.
    Concurrent deliveries for one new email cannot both create: the unique email decides."""
    repo = ScorerRepository(uow.session)
    email = normalise_email(str(received.email))
    profile = received.model_copy(update={"email": email})
    inserted = await repo.insert_lead_if_new(
        lead_id=lead_id,
        email=email,
        profile=profile.model_dump(mode="json"),
        received_at=received_at,
    )
    if inserted is not None:
        return inserted, True
    lead = await repo.get_lead_by_email(email, for_update=True)
    assert lead is not None
    merged = merge_profiles(LeadProfile.model_validate(lead.profile), profile)
    lead.profile = merged.model_dump(mode="json")
    return lead, False


async def score_created_leads(
    uow: UnitOfWork, batch: Sequence[LeadCreatedV1]
) -> list[LeadScoredV1 | None]:
    """Score leads against the current ICP, record each score and its explanation, and
    announce `lead.scored`, in order, as if one at a time (the ICP is read and the known
    leads are locked once for the batch). A lead put on the topic by another producer is
    stored first (or merged into the lead already known for its email, whose id the score
    then carries).

    New engagement from a lead sales has closed is recorded (merged and scored) but not
    announced, unless the lead was nurtured and its re-qualify date has come (UTC): then it
    re-qualifies, and is announced as its next sales cycle to be routed again."""
    repo = ScorerRepository(uow.session)
    icp_row = await repo.current_icp()
    if icp_row is None:
        raise NoIcpPublished("publish an ICP (POST /v1/icp) before leads can be scored")
    icp = IcpDocument.model_validate(icp_row.document)
    known = await repo.get_leads([created.lead_id for created in batch], for_update=True)
    scored: list[LeadScoredV1 | None] = []
    for created in batch:
        lead = known.get(created.lead_id)
        if lead is None:
            lead, _ = await _lead_for(
                uow, created.lead_id, created.lead, received_at=created.received_at
            )
            known[created.lead_id] = lead
        else:
            merged = merge_profiles(LeadProfile.model_validate(lead.profile), created.lead)
            lead.profile = merged.model_dump(mode="json")
        scored.append(await _score_created(uow, lead, icp_row, icp))
    return scored


async def _score_created(
    uow: UnitOfWork, lead: Lead, icp_row: IcpVersion, icp: IcpDocument
) -> LeadScoredV1 | None:
    if lead.outcome is None:
        return await _score(uow, lead, icp_row, icp, announce="always")
    if should_requalify(lead.outcome, lead.requalify_on, utcnow().date()):
        lead.cycle += 1
        lead.outcome = None
        lead.requalify_on = None
        return await _score(uow, lead, icp_row, icp, announce="always")
    return await _score(uow, lead, icp_row, icp, announce="never")


async def _score(
    uow: UnitOfWork, lead: Lead, icp_row: IcpVersion, icp: IcpDocument, *, announce: Announce
) -> LeadScoredV1 | None:
    """Score `lead` with `icp_row`, record it, and publish `lead.scored` (carrying the lead's
    sales cycle) — always, only when the grade changed (`announce="grade_changed"`, for
    re-scoring), or never (`announce="never"`, for a lead sales has closed)."""
    profile = LeadProfile.model_validate(lead.profile)
    now = utcnow()
    result = score_lead(profile, icp, now=now)
    domain = account_domain(profile, icp.disqualifiers.free_mail_domains)
    grade_changed = lead.grade != result.grade.value
    uow.append(
        LEAD_SCORES,
        {
            "lead_id": lead.id,
            "icp_version": icp_row.version,
            "score": result.score,
            "grade": result.grade.value,
            "engagement_level": result.engagement_level,
            "contributions": [c.model_dump(mode="json") for c in result.contributions],
            "disqualifiers": list(result.disqualifiers),
            "scored_at": now,
        },
    )
    lead.status = "scored"
    lead.score = result.score
    lead.grade = result.grade.value
    lead.engagement_level = result.engagement_level
    lead.icp_version = icp_row.version
    lead.account_domain = domain
    lead.scored_at = now
    if announce == "never" or (announce == "grade_changed" and not grade_changed):
        return None
    scored = LeadScoredV1(
        lead_id=lead.id,
        icp_version=icp_row.version,
        score=result.score,
        grade=result.grade,
        engagement_level=result.engagement_level,
        contributions=list(result.contributions),
        disqualifiers=list(result.disqualifiers),
        scored_at=now,
        received_at=lead.received_at,
        lead=profile,
        account_domain=domain,
        cycle=lead.cycle,
    )
    await uow.publish(scored, topic=LEAD_SCORED.name, subject=lead.id)
    return scored


async def record_outcome(uow: UnitOfWork, change: LeadStatusChangedV1) -> bool:
    """Remember how sales closed a lead (for ICP calibration), so re-scoring leaves it be.
    Returns whether the lead is now closed."""
    if change.to_status.value not in CLOSED_BY_SALES:
        return False
    lead = await ScorerRepository(uow.session).get_lead(change.lead_id, for_update=True)
    if lead is None:
        return False
    lead.outcome = change.to_status.value
    # A close starts over: only the nurture request that follows it (on the same partition,
    # so after it) may set the date on which this close ends.
    lead.requalify_on = None
    return True


async def record_nurture_request(uow: UnitOfWork, request: LeadNurtureRequestedV1) -> bool:
    """Remember until when a lead sales let go is nurtured: new engagement from then on
    re-qualifies it. Only sales' requests count (the router's own, for low fit or lack of
    capacity, are for marketing). Returns whether it was recorded (the lead is known)."""
    if request.requested_by != "feedback":
        return False
    lead = await ScorerRepository(uow.session).get_lead(request.lead_id, for_update=True)
    if lead is None:
        return False
    lead.requalify_on = request.requalify_on
    return True


async def start_rescore(uow: UnitOfWork, version: int) -> RescoreJob:
    """Queue a re-score of every open scored lead (not closed by sales) with ICP `version`;
    a worker runs it."""
    repo = ScorerRepository(uow.session)
    if await repo.icp_version(version) is None:
        raise NotFound(f"no ICP version {version}")
    job = RescoreJob(
        id=uuid.uuid4().hex,
        icp_version=version,
        state="running",
        total=await repo.count_scored_leads(),
        created_at=utcnow(),
    )
    repo.add(job)
    return job


async def rescore_next_batch(uow: UnitOfWork, *, batch_size: int) -> RescoreJob | None:
    """Advance one running job by one batch of leads (in lead id order, resumable after a
    restart); returns the job, or None when no job is waiting. Several instances share the
    work: a job being advanced elsewhere is skipped."""
    repo = ScorerRepository(uow.session)
    job = await repo.next_running_job()
    if job is None:
        return None
    icp_row = await repo.icp_version(job.icp_version)
    assert icp_row is not None
    icp = IcpDocument.model_validate(icp_row.document)
    leads = await repo.scored_leads_after(job.cursor, limit=batch_size)
    for lead in leads:
        if await _score(uow, lead, icp_row, icp, announce="grade_changed") is not None:
            job.changed += 1
    job.done += len(leads)
    if leads:
        job.cursor = leads[-1].id
    if len(leads) < batch_size:
        job.state = "done"
        job.finished_at = utcnow()
    return job


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
    await uow.publish(
        IcpPublishedV1(
            version=row.version,
            name=document.name,
            published_at=now,
            grades=document.grades.model_dump(mode="json", by_alias=True),
        ),
        topic=ICP.name,
        subject=f"icp/{row.version}",
    )
    return row
