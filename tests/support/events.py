"""Events as the services announce them, for tests that feed a handler directly."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from handoff_schemas import FitGrade, LeadProfile, LeadScoredV1


def scored_lead(
    lead_id: str,
    *,
    at: datetime | None = None,
    grade: FitGrade = FitGrade.A,
    score: float = 80,
    email: str | None = None,
    **fields: Any,
) -> LeadScoredV1:
    """`lead.scored` for a lead received and scored `at` (now), graded A (80) unless told,
    with no explanation; `fields` sets the others (account_domain, cycle...)."""
    when = at or datetime.now(UTC)
    return LeadScoredV1(
        lead_id=lead_id,
        icp_version=1,
        score=score,
        grade=grade,
        engagement_level=2,
        contributions=[],
        scored_at=when,
        received_at=when,
        lead=LeadProfile(email=email or f"{lead_id}@acme.io"),
        **fields,
    )
