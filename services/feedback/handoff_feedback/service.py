"""Feedback's use cases: follow routing outcomes, apply sales' status changes, tell
marketing what to nurture."""

from __future__ import annotations

from datetime import datetime

from handoff_runtime.db import UnitOfWork
from handoff_runtime.problems import Conflict, DomainError, NotFound
from handoff_schemas import (
    LEAD_STATUS,
    LeadAssignedV1,
    LeadNurtureRequestedV1,
    LeadQueuedV1,
    LeadStatus,
    LeadStatusChangedV1,
    utcnow,
)

from .lifecycle import (
    Reason,
    ReasonRequired,
    TransitionRefused,
    check_transition,
    is_working,
    nurture_request,
)
from .models import HistoryEntry, TrackedLead
from .repository import FeedbackRepository


class InvalidTransition(Conflict):
    """The lifecycle does not allow this status from the lead's current one."""

    type = "invalid-transition"
    title = "Status change not allowed"


class MissingReason(DomainError):
    """Leaving the funnel needs a reason (and `other` a note)."""

    status = 422
    type = "reason-required"
    title = "Reason required"


async def follow_routing(
    uow: UnitOfWork,
    lead_id: str,
    *,
    status: str,
    occurred_at: datetime,
    rep_id: str | None = None,
    team_id: str | None = None,
    reason: str | None = None,
    note: str | None = None,
) -> None:
    """Record what the router did with a lead: the owner and the start of its lifecycle."""
    repo = FeedbackRepository(uow.session)
    lead = await repo.lead(lead_id, for_update=True)
    previous = lead.status if lead else None
    now = utcnow()
    if lead is None:
        lead = TrackedLead(lead_id=lead_id, status=status, updated_at=now)
        repo.add(lead)
    lead.status, lead.updated_at = status, now
    if rep_id is not None:
        lead.rep_id, lead.team_id = rep_id, team_id
    repo.add(
        HistoryEntry(
            lead_id=lead_id,
            from_status=previous,
            to_status=status,
            reason=reason,
            note=note,
            actor="router",
            rep_id=rep_id,
            occurred_at=occurred_at,
            recorded_at=now,
        )
    )


async def lead_assigned(uow: UnitOfWork, event: LeadAssignedV1) -> None:
    """A rep owns the lead now: its lifecycle starts at `assigned`."""
    await follow_routing(
        uow,
        event.lead_id,
        status=LeadStatus.ASSIGNED.value,
        occurred_at=event.assigned_at,
        rep_id=event.rep_id,
        team_id=event.team_id,
        note=f"assigned to {event.rep_name} ({event.decision.rule})",
    )


async def lead_queued(uow: UnitOfWork, event: LeadQueuedV1) -> None:
    """The lead waits in a team's backlog."""
    await follow_routing(
        uow, event.lead_id, status="queued", occurred_at=event.queued_at, team_id=event.team_id
    )


async def lead_nurtured(uow: UnitOfWork, event: LeadNurtureRequestedV1) -> None:
    """The router sent the lead to nurture instead of sales."""
    await follow_routing(
        uow,
        event.lead_id,
        status="nurture",
        occurred_at=event.requested_at,
        reason=event.reason.value,
        note=event.note,
    )


async def change_status(
    uow: UnitOfWork,
    lead_id: str,
    *,
    status: LeadStatus,
    reason: Reason | None,
    note: str | None,
    actor: str | None,
    occurred_at: datetime | None,
) -> TrackedLead:
    """Apply a status change reported by sales, announce it, and ask marketing to nurture
    the lead when sales let it go for a nurturable reason."""
    repo = FeedbackRepository(uow.session)
    lead = await repo.lead(lead_id, for_update=True)
    if lead is None:
        raise NotFound(f"no lead {lead_id} has been routed to sales")
    try:
        current = LeadStatus(lead.status)
    except ValueError:
        raise InvalidTransition(
            f"lead {lead_id} is {lead.status}, not owned by a rep", allowed=[]
        ) from None
    try:
        check_transition(current, status, reason, note)
    except TransitionRefused as exc:
        raise InvalidTransition(str(exc), allowed=[s.value for s in exc.allowed]) from None
    except ReasonRequired as exc:
        raise MissingReason(
            str(exc), errors=[{"field": "body.reason", "reason": str(exc)}]
        ) from None
    now = utcnow()
    when = occurred_at or now
    lead.status, lead.updated_at = status.value, now
    repo.add(
        HistoryEntry(
            lead_id=lead_id,
            from_status=current.value,
            to_status=status.value,
            reason=reason.value if reason else None,
            note=note,
            actor=actor,
            rep_id=lead.rep_id,
            occurred_at=when,
            recorded_at=now,
        )
    )
    await uow.publish(
        LeadStatusChangedV1(
            lead_id=lead_id,
            from_status=current,
            to_status=status,
            rep_id=lead.rep_id,
            reason=reason.value if reason else None,
            note=note,
            actor=actor,
            occurred_at=when,
            working=is_working(status),
        ),
        topic=LEAD_STATUS.name,
        subject=lead_id,
    )
    nurture = nurture_request(status, reason, today=when.date())
    if nurture is not None:
        nurture_reason, requalify_on = nurture
        await uow.publish(
            LeadNurtureRequestedV1(
                lead_id=lead_id,
                reason=nurture_reason,
                requalify_on=requalify_on,
                note=note,
                requested_at=now,
                requested_by="feedback",
            ),
            topic=LEAD_STATUS.name,
            subject=lead_id,
        )
    return lead
