"""Feedback's use cases: follow each lead from intake through routing, apply sales' status
reports (in whatever order they come), and tell marketing what to nurture."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

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
    Disposition,
    Policy,
    Reason,
    Report,
    ReportInvalid,
    State,
    TransitionRefused,
    check_report,
    is_working,
    nurture_request,
)
from .models import PendingStatus, TrackedLead
from .repository import FeedbackRepository

NEW, QUEUED, NURTURE = "new", "queued", "nurture"
BEFORE_SALES = frozenset({NEW, QUEUED})
"""A lead in these states is on its way to a rep: a status report for it waits."""
PENDING = "pending"


class InvalidTransition(Conflict):
    """The lifecycle does not allow this status from the lead's current one."""

    type = "invalid-transition"
    title = "Status change not allowed"


class InvalidReport(DomainError):
    """A report that is wrong whatever the lead's status (a missing reason, an amount for a
    status other than won, a time in the future)."""

    status = 422
    type = "invalid-status-report"
    title = "Invalid status report"


@dataclass(frozen=True)
class Outcome:
    """What a status report did: the lead as it is now, and the report's disposition
    (applied, late, duplicate, or pending until the lead's assignment)."""

    lead: TrackedLead
    disposition: str


# --- following the lead from intake through routing ------------------------------------


@dataclass(frozen=True)
class Sighting:
    """Marketing handed in a lead (`engaged`: an intake of it, the first or a later one), or
    the scorer scored it (`cycle`: the sales cycle the score is for)."""

    lead_id: str
    cycle: int
    at: datetime
    engaged: bool


async def leads_seen(uow: UnitOfWork, sightings: Sequence[Sighting]) -> None:
    """Feedback knows each lead from its first sighting on. A later intake is recorded as
    engagement; a higher cycle means the lead re-qualified after nurture and is on its way
    to sales again. Applied in order, as one at a time would be (the leads are read and
    locked once)."""
    repo = FeedbackRepository(uow)
    ids = [sighting.lead_id for sighting in sightings]
    leads = await repo.leads(ids, for_update=True)
    created = (
        await repo.with_history(ids, "created") if any(s.engaged for s in sightings) else set()
    )
    now = utcnow()
    for seen in sightings:
        known = seen.lead_id in leads
        lead = _tracked(repo, leads, seen.lead_id, seen.cycle)
        if known:
            _requalified(repo, lead, seen.cycle, seen.at, now)
        if not seen.engaged:
            continue
        if seen.lead_id in created:
            _history(
                repo,
                lead,
                lead.status,
                "engaged",
                "marketing",
                seen.at,
                now,
                disposition="recorded",
            )
        else:
            _history(repo, lead, None, "created", "marketing", seen.at, now)
            created.add(seen.lead_id)
    await repo.save_changed(leads.values())


Routed = LeadAssignedV1 | LeadQueuedV1 | LeadNurtureRequestedV1
"""A routing outcome feedback follows."""


async def leads_routed(uow: UnitOfWork, events: Sequence[Routed], policy: Policy) -> None:
    """Routing outcomes, applied in order as one at a time would be (the leads and the
    waiting reports of the assigned ones are read and locked once).

    An assignment: a rep owns the lead, its lifecycle (re)starts at `assigned`, and status
    reports that came before the assignment are applied now, oldest first; one from an
    earlier cycle, or for a lead sales already moved past its working statuses, changes
    nothing. Queued or sent to nurture: the lead waits without a rep, which never overrides
    an assignment it already has."""
    repo = FeedbackRepository(uow)
    leads = await repo.leads([event.lead_id for event in events], for_update=True)
    assigned = [event.lead_id for event in events if isinstance(event, LeadAssignedV1)]
    waiting_reports = await repo.pending_for(assigned) if assigned else {}
    for event in events:
        if isinstance(event, LeadAssignedV1):
            await _assigned(uow, repo, leads, event, waiting_reports, policy)
        elif isinstance(event, LeadQueuedV1):
            _before_sales(
                repo,
                leads,
                event.lead_id,
                QUEUED,
                event.queued_at,
                cycle=event.cycle,
                team_id=event.team_id,
            )
        else:
            _before_sales(
                repo,
                leads,
                event.lead_id,
                NURTURE,
                event.requested_at,
                cycle=event.cycle,
                reason=event.reason.value,
                note=event.note,
            )
    await repo.save_changed(leads.values())


def _requalified(
    repo: FeedbackRepository, lead: TrackedLead, cycle: int, at: datetime, now: datetime
) -> None:
    """A known lead seen in a later sales cycle re-qualified: it starts the cycle without a
    rep's status. The scorer's `lead.scored` says so first, unless the router's outcome for
    the new cycle (on another topic) was read before it: whichever comes first records it."""
    if cycle <= lead.cycle:
        return
    previous = lead.status
    lead.status, lead.cycle, lead.status_at, lead.updated_at = NEW, cycle, None, now
    _history(repo, lead, previous, "requalified", "scorer", at, now, note=f"cycle {cycle}")


def _tracked(
    repo: FeedbackRepository, leads: dict[str, TrackedLead], lead_id: str, cycle: int
) -> TrackedLead:
    """The lead as this batch knows it, tracked from now on if it is new."""
    lead = leads.get(lead_id)
    if lead is None:
        lead = TrackedLead(lead_id=lead_id, status=NEW, cycle=cycle, updated_at=utcnow())
        repo.add(lead)
        leads[lead_id] = lead
    return lead


async def _assigned(
    uow: UnitOfWork,
    repo: FeedbackRepository,
    leads: dict[str, TrackedLead],
    event: LeadAssignedV1,
    waiting_reports: dict[str, list[PendingStatus]],
    policy: Policy,
) -> None:
    now = utcnow()
    known = event.lead_id in leads
    lead = _tracked(repo, leads, event.lead_id, event.cycle)
    if known:
        _requalified(repo, lead, event.cycle, event.assigned_at, now)
    if known and (
        event.cycle < lead.cycle
        or (
            event.cycle == lead.cycle
            and lead.status not in BEFORE_SALES | {NURTURE}
            and not is_working(LeadStatus(lead.status))
        )
    ):
        return
    previous = lead.status
    lead.status, lead.status_at, lead.cycle = LeadStatus.ASSIGNED.value, None, event.cycle
    lead.rep_id, lead.team_id, lead.updated_at = event.rep_id, event.team_id, now
    _history(
        repo,
        lead,
        previous,
        LeadStatus.ASSIGNED,
        "router",
        event.assigned_at,
        now,
        note=f"assigned to {event.rep_name} ({event.decision.rule})",
    )
    still_waiting = []
    for waiting in waiting_reports.pop(event.lead_id, []):
        if waiting.change.get("rep_id") not in (None, event.rep_id):
            still_waiting.append(waiting)  # about another rep: waits for their assignment
            continue
        report = Report(
            status=LeadStatus(waiting.change["status"]),
            occurred_at=datetime.fromisoformat(waiting.change["occurred_at"]),
            reason=Reason(waiting.change["reason"]) if waiting.change.get("reason") else None,
            note=waiting.change.get("note"),
            amount=waiting.change.get("amount"),
            rep_id=waiting.change.get("rep_id"),
        )
        actor = waiting.change.get("actor")
        try:
            await _receive(uow, repo, lead, report, actor, waiting.delivery_id, policy)
        except InvalidTransition as refused:
            _kept(
                repo, lead, report, actor, waiting.delivery_id, Disposition.REFUSED, refused.detail
            )
        await repo.delete(waiting)
    if still_waiting:
        waiting_reports[event.lead_id] = still_waiting


def _before_sales(
    repo: FeedbackRepository,
    leads: dict[str, TrackedLead],
    lead_id: str,
    status: str,
    at: datetime,
    *,
    cycle: int,
    team_id: str | None = None,
    reason: str | None = None,
    note: str | None = None,
) -> None:
    """Record a routing outcome that leaves the lead without a rep (queued, nurture); it
    never overrides an assignment the lead already has. The outcome's sales cycle may be the
    first news of the lead's re-qualification."""
    known = lead_id in leads
    lead = _tracked(repo, leads, lead_id, cycle)
    now = utcnow()
    if known:
        _requalified(repo, lead, cycle, at, now)
    if known and lead.status not in BEFORE_SALES:
        return
    previous = lead.status
    lead.status, lead.team_id, lead.updated_at = status, team_id, now
    _history(repo, lead, previous, status, "router", at, now, reason=reason, note=note)


# --- status reports from sales -----------------------------------------------------------


async def report_status(
    uow: UnitOfWork,
    lead_id: str,
    report: Report,
    *,
    actor: str | None,
    delivery_id: str | None,
    policy: Policy,
) -> Outcome:
    """Take a status report from the CRM: apply it, keep it as late or duplicate, or — for
    a lead still on its way to a rep — keep it until the assignment arrives."""
    try:
        check_report(report)
    except ReportInvalid as exc:
        raise _invalid(exc.field, str(exc)) from None
    if report.occurred_at > utcnow() + policy.clock_skew:
        raise _invalid("occurred_at", "occurred_at is in the future")
    repo = FeedbackRepository(uow)
    lead = await repo.lead(lead_id, for_update=True)
    if lead is None:
        raise NotFound(f"feedback has not seen lead {lead_id}")
    if lead.status in BEFORE_SALES:
        _wait(repo, lead_id, report, actor, delivery_id)
        return Outcome(lead, PENDING)
    if lead.status == NURTURE:
        raise InvalidTransition(
            f"lead {lead_id} went to nurture, not to sales", allowed=[], current_status=NURTURE
        )
    if report.rep_id is not None and report.rep_id != lead.rep_id:
        # Not about the owner feedback knows: about an owner to come (a reassignment on its
        # way), or one who had the lead before in this cycle.
        if not await _owned_before(repo, lead, report.rep_id):
            _wait(repo, lead_id, report, actor, delivery_id)
            return Outcome(lead, PENDING)
        why = f"reported for {report.rep_id}, who no longer owns the lead"
        _kept(repo, lead, report, actor, delivery_id, Disposition.LATE, why)
        return Outcome(lead, Disposition.LATE.value)
    disposition = await _receive(uow, repo, lead, report, actor, delivery_id, policy)
    return Outcome(lead, disposition.value)


def _kept(
    repo: FeedbackRepository,
    lead: TrackedLead,
    report: Report,
    actor: str | None,
    delivery_id: str | None,
    disposition: Disposition,
    why: str,
) -> None:
    """Keep a report that does not move the lead in its history, saying why."""
    _history(
        repo,
        lead,
        lead.status,
        report.status,
        actor,
        report.occurred_at,
        utcnow(),
        disposition=disposition,
        reason=report.reason.value if report.reason else None,
        note=f"{report.note or ''} [{why}]".strip(),
        report=report,
        delivery_id=delivery_id,
    )


def _wait(
    repo: FeedbackRepository,
    lead_id: str,
    report: Report,
    actor: str | None,
    delivery_id: str | None,
) -> None:
    """Keep a report until the lead's assignment (to the rep it names, if any) arrives."""
    repo.add(
        PendingStatus(
            lead_id=lead_id,
            change={
                "status": report.status.value,
                "occurred_at": report.occurred_at.isoformat(),
                "reason": report.reason.value if report.reason else None,
                "note": report.note,
                "amount": report.amount,
                "actor": actor,
                "rep_id": report.rep_id,
            },
            delivery_id=delivery_id,
            received_at=utcnow(),
        )
    )


async def _owned_before(repo: FeedbackRepository, lead: TrackedLead, rep_id: str) -> bool:
    """Whether the lead was assigned to `rep_id` earlier in its current cycle."""
    return any(
        step.to_status == LeadStatus.ASSIGNED.value
        and step.rep_id == rep_id
        and step.cycle == lead.cycle
        and step.disposition == Disposition.APPLIED.value
        for step in await repo.history(lead.lead_id)
    )


async def _receive(
    uow: UnitOfWork,
    repo: FeedbackRepository,
    lead: TrackedLead,
    report: Report,
    actor: str | None,
    delivery_id: str | None,
    policy: Policy,
) -> Disposition:
    """Apply one valid report to an assigned lead, or keep it in the history as late or a
    duplicate; raise InvalidTransition when it would move the lead backwards."""
    current = LeadStatus(lead.status)
    try:
        after, disposition = State(current, lead.status_at).after(report)
    except TransitionRefused as exc:
        raise InvalidTransition(
            str(exc), allowed=[s.value for s in exc.allowed], current_status=current.value
        ) from None
    now = utcnow()
    _history(
        repo,
        lead,
        current,
        report.status,
        actor,
        report.occurred_at,
        now,
        disposition=disposition,
        reason=report.reason.value if report.reason else None,
        note=report.note,
        report=report,
        delivery_id=delivery_id,
    )
    if disposition is not Disposition.APPLIED:
        return disposition
    lead.status, lead.status_at, lead.updated_at = after.status.value, after.since, now
    await _announce(uow, lead, current, report, actor, policy)
    return disposition


async def _announce(
    uow: UnitOfWork,
    lead: TrackedLead,
    previous: LeadStatus,
    report: Report,
    actor: str | None,
    policy: Policy,
) -> None:
    """Publish the status change, and a nurture request when sales let the lead go for a
    reason worth nurturing (re-qualify date counted from when it happened)."""
    reason = report.reason.value if report.reason else None
    await uow.publish(
        LeadStatusChangedV1(
            lead_id=lead.lead_id,
            from_status=previous,
            to_status=report.status,
            rep_id=lead.rep_id,
            team_id=lead.team_id,
            reason=reason,
            note=report.note,
            actor=actor,
            occurred_at=report.occurred_at,
            working=is_working(report.status),
            amount=report.amount,
            cycle=lead.cycle,
        ),
        topic=LEAD_STATUS.name,
        subject=lead.lead_id,
    )
    nurture = nurture_request(
        report.status,
        report.reason,
        today=report.occurred_at.date(),
        after_days=policy.requalify_after_days,
    )
    if nurture is not None:
        nurture_reason, requalify_on = nurture
        await uow.publish(
            LeadNurtureRequestedV1(
                lead_id=lead.lead_id,
                reason=nurture_reason,
                requalify_on=requalify_on,
                note=report.note,
                requested_at=utcnow(),
                requested_by="feedback",
                cycle=lead.cycle,
            ),
            topic=LEAD_STATUS.name,
            subject=lead.lead_id,
        )


def _invalid(field_name: str, message: str) -> InvalidReport:
    return InvalidReport(message, errors=[{"field": f"body.{field_name}", "reason": message}])


def _history(
    repo: FeedbackRepository,
    lead: TrackedLead,
    from_status: str | None,
    to_status: str,
    actor: str | None,
    occurred_at: datetime,
    recorded_at: datetime,
    *,
    disposition: str = Disposition.APPLIED,
    reason: str | None = None,
    note: str | None = None,
    report: Report | None = None,
    delivery_id: str | None = None,
) -> None:
    amount = report.amount if report is not None else None
    repo.add_history(
        {
            "lead_id": lead.lead_id,
            "from_status": from_status,
            "to_status": str(to_status),
            "reason": reason,
            "note": note,
            "actor": actor,
            "rep_id": lead.rep_id,
            "occurred_at": occurred_at,
            "recorded_at": recorded_at,
            "disposition": str(disposition),
            "cycle": lead.cycle,
            "amount": Decimal(str(amount)) if amount is not None else None,
            "delivery_id": delivery_id,
        }
    )
