"""The lead lifecycle as sales reports it, as pure rules.

The funnel's steps:

    assigned -> accepted -> contacted -> qualified -> converted -> won | lost

A rep may report first contact without accepting first (assigned -> contacted). A working
lead (assigned, accepted, contacted) can also be disqualified or recycled to marketing; a
qualified lead can be lost. Won, lost, disqualified and recycled are final for sales.

A CRM reports where a lead is now, and it may skip steps (a rep marks a lead qualified
without having marked it contacted): any status *ahead* of the current one is allowed, so
the allowed moves from a status are every status reachable from it by the steps above. A
status that is not ahead is refused, unless the report is older than the lead's current
status (by `occurred_at`): then it is a late delivery, kept in the history but never moving
the lead backwards. Together these make the outcome independent of delivery order: any
order of the reports of one real sequence, with repeats, ends where the sequence ends.

Leaving the funnel (disqualified, recycled, lost) needs a reason; `other` needs a note.
Some reasons are worth nurturing, and each of those comes with a re-qualify date.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum

from handoff_schemas import WORKING_STATUSES, LeadStatus, NurtureReason

S = LeadStatus

TRANSITIONS: dict[LeadStatus, frozenset[LeadStatus]] = {
    S.ASSIGNED: frozenset({S.ACCEPTED, S.CONTACTED, S.DISQUALIFIED, S.RECYCLED}),
    S.ACCEPTED: frozenset({S.CONTACTED, S.DISQUALIFIED, S.RECYCLED}),
    S.CONTACTED: frozenset({S.QUALIFIED, S.DISQUALIFIED, S.RECYCLED}),
    S.QUALIFIED: frozenset({S.CONVERTED, S.LOST}),
    S.CONVERTED: frozenset({S.WON, S.LOST}),
    S.WON: frozenset(),
    S.LOST: frozenset(),
    S.DISQUALIFIED: frozenset(),
    S.RECYCLED: frozenset(),
}
"""The funnel's single steps."""


def _ahead_of(status: LeadStatus) -> frozenset[LeadStatus]:
    ahead: set[LeadStatus] = set()
    frontier = set(TRANSITIONS[status])
    while frontier:
        step = frontier.pop()
        if step not in ahead:
            ahead.add(step)
            frontier |= TRANSITIONS[step]
    return frozenset(ahead)


ALLOWED: dict[LeadStatus, frozenset[LeadStatus]] = {s: _ahead_of(s) for s in LeadStatus}
"""The statuses a lead may move to from each status: every one ahead of it in the funnel."""

FINAL = frozenset(s for s, ahead in ALLOWED.items() if not ahead)
NEEDS_REASON = frozenset({S.DISQUALIFIED, S.RECYCLED, S.LOST})


class Reason(StrEnum):
    """Why sales stopped working a lead."""

    NO_BUDGET = "no_budget"
    NO_TIMELINE = "no_timeline"
    NO_AUTHORITY = "no_authority"
    NO_NEED = "no_need"
    BAD_FIT = "bad_fit"
    UNREACHABLE = "unreachable"
    DUPLICATE = "duplicate"
    COMPETITOR = "competitor"
    OTHER = "other"


REQUALIFY_AFTER_DAYS: dict[Reason, int] = {
    Reason.NO_BUDGET: 90,
    Reason.NO_TIMELINE: 60,
    Reason.NO_AUTHORITY: 30,
    Reason.NO_NEED: 120,
    Reason.UNREACHABLE: 30,
}
"""Nurturable reasons and how long marketing nurtures before sales looks again (the
defaults; a deployment sets its own)."""


@dataclass(frozen=True)
class Report:
    """One status change as the CRM reports it."""

    status: LeadStatus
    occurred_at: datetime
    reason: Reason | None = None
    note: str | None = None
    amount: float | None = None
    rep_id: str | None = None
    """The rep the CRM reports for (the owner it knows), if it says."""


class TransitionRefused(ValueError):
    """A status change the lifecycle does not allow; names what is allowed instead."""

    def __init__(self, current: LeadStatus, requested: LeadStatus) -> None:
        self.current = current
        self.requested = requested
        self.allowed = sorted(ALLOWED[current])
        allowed = ", ".join(self.allowed) or "none (final status)"
        super().__init__(f"cannot go from {current} to {requested}; allowed: {allowed}")


class ReportInvalid(ValueError):
    """A report that is wrong whatever the lead's status; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def check_report(report: Report) -> None:
    """Raise if the report lacks a reason it needs or carries an amount it cannot."""
    if report.status in NEEDS_REASON and report.reason is None:
        raise ReportInvalid("reason", f"a reason is required to mark a lead {report.status}")
    if report.reason is Reason.OTHER and not (report.note and report.note.strip()):
        raise ReportInvalid("note", "reason 'other' needs a note")
    if report.amount is not None and report.status is not S.WON:
        raise ReportInvalid("amount", "an amount goes only with status won")


class Disposition(StrEnum):
    """What a report did to its lead."""

    APPLIED = "applied"
    """The lead moved to the reported status."""
    LATE = "late"
    """Older than the lead's current status, or about a rep who no longer owns the lead:
    kept in the history, the lead stays put."""
    DUPLICATE = "duplicate"
    """The lead is already in the reported status."""
    REFUSED = "refused"
    """Waited for the assignment, then turned out not allowed (kept in the history)."""


def decide(current: LeadStatus, since: datetime | None, report: Report) -> Disposition:
    """Whether `report` moves a lead that is `current` since `since` (None: since its
    assignment, which any report of its owner follows). Raises TransitionRefused for a
    report that is not ahead and not older."""
    if report.status is current:
        return Disposition.DUPLICATE
    if report.status in ALLOWED[current]:
        if since is not None and report.occurred_at < since:
            return Disposition.LATE
        return Disposition.APPLIED
    if since is not None and report.occurred_at <= since:
        return Disposition.LATE
    raise TransitionRefused(current, report.status)


@dataclass(frozen=True)
class State:
    """Where a lead is in its lifecycle, and since when (None: since its assignment)."""

    status: LeadStatus = S.ASSIGNED
    since: datetime | None = None

    def after(self, report: Report) -> tuple[State, Disposition]:
        """The state once `report` is received, and what the report did."""
        disposition = decide(self.status, self.since, report)
        if disposition is Disposition.APPLIED:
            return State(report.status, report.occurred_at), disposition
        return self, disposition


@dataclass(frozen=True)
class Policy:
    """How feedback treats what sales reports (a deployment's settings)."""

    requalify_after_days: Mapping[Reason, int] = field(
        default_factory=lambda: dict(REQUALIFY_AFTER_DAYS)
    )
    clock_skew: timedelta = timedelta(minutes=5)
    """How far in the future a reported time may be (the CRM's clock may run ahead)."""


def is_working(status: LeadStatus) -> bool:
    """Whether a lead in this status occupies its owner's capacity."""
    return status in WORKING_STATUSES


def nurture_request(
    status: LeadStatus,
    reason: Reason | None,
    *,
    today: date,
    after_days: Mapping[Reason, int] = REQUALIFY_AFTER_DAYS,
) -> tuple[NurtureReason, date] | None:
    """The nurture reason and re-qualify date for a lead sales let go, if it is nurturable
    (its reason has a number of days in `after_days`)."""
    if status not in (S.DISQUALIFIED, S.RECYCLED) or reason is None or reason not in after_days:
        return None
    return NurtureReason(reason.value), today + timedelta(days=after_days[reason])
