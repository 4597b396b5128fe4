"""When a lead that sales let go goes back to sales.

Sales closes a lead as won, lost, disqualified or recycled. A lead disqualified or recycled
for a reason marketing can work on (no budget yet, no timeline...) is nurtured until a
re-qualify date. New engagement from that person — a new intake — on or after that date
re-qualifies the lead: it is scored and routed again, as its next sales cycle, carrying its
history. Before that date, and for a lead won, lost or closed without a re-qualify date, new
engagement is only recorded (merged into the profile and scored) and not announced: the lead
stays where sales left it.
"""

from __future__ import annotations

from datetime import date

CLOSED_BY_SALES = frozenset({"won", "lost", "disqualified", "recycled"})
"""Outcomes with which sales closes a lead."""

NURTURED_BY_SALES = frozenset({"disqualified", "recycled"})
"""Outcomes after which a lead may re-qualify, on or after its re-qualify date."""


def should_requalify(outcome: str | None, requalify_on: date | None, today: date) -> bool:
    """Whether new engagement from a closed lead today sends it back to sales: it was
    disqualified or recycled with a re-qualify date, and that date has come."""
    return outcome in NURTURED_BY_SALES and requalify_on is not None and today >= requalify_on
