"""The lead lifecycle as sales reports it, as pure rules.

assigned -> accepted -> contacted -> qualified -> converted -> won | lost.
A rep may report first contact without accepting first (assigned -> contacted).
A working lead (assigned, accepted, contacted) can also be disqualified or recycled to
marketing; a qualified lead can be lost. Won, lost, disqualified and recycled are final
for sales. Disqualifying or recycling needs a reason; some reasons are worth nurturing,
and each of those comes with a re-qualify date.
"""

from __future__ import annotations

from datetime import date, timedelta
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
"""Nurturable reasons and how long marketing nurtures before sales looks again."""


class TransitionRefused(ValueError):
    """A status change the lifecycle does not allow; names what is allowed instead."""

    def __init__(self, current: LeadStatus, requested: LeadStatus) -> None:
        self.current = current
        self.requested = requested
        self.allowed = sorted(TRANSITIONS[current])
        allowed = ", ".join(self.allowed) or "none (final status)"
        super().__init__(f"cannot go from {current} to {requested}; allowed: {allowed}")


class ReasonRequired(ValueError):
    """Leaving the funnel needs a reason, and `other` needs a note."""


def check_transition(
    current: LeadStatus, requested: LeadStatus, reason: Reason | None, note: str | None
) -> None:
    """Raise if `current -> requested` is not allowed or lacks a reason."""
    if requested not in TRANSITIONS[current]:
        raise TransitionRefused(current, requested)
    if requested in NEEDS_REASON and reason is None:
        raise ReasonRequired(f"a reason is required to mark a lead {requested}")
    if reason is Reason.OTHER and not (note and note.strip()):
        raise ReasonRequired("reason 'other' needs a note")


def is_working(status: LeadStatus) -> bool:
    """Whether a lead in this status occupies its owner's capacity."""
    return status in WORKING_STATUSES


def nurture_request(
    status: LeadStatus, reason: Reason | None, *, today: date
) -> tuple[NurtureReason, date] | None:
    """The nurture reason and re-qualify date for a lead sales let go, if it is nurturable."""
    if status not in (S.DISQUALIFIED, S.RECYCLED) or reason not in REQUALIFY_AFTER_DAYS:
        return None
    return NurtureReason(reason.value), today + timedelta(days=REQUALIFY_AFTER_DAYS[reason])
