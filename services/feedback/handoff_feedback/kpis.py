"""The shared KPIs that sales and marketing managers read, and the projection that feeds them.

The funnel, in order:

    leads -> mql -> assigned -> accepted -> contacted -> qualified -> converted -> won

- **lead**: a lead.created event was seen (a merge re-publishes it; the first counts).
- **MQL**: the router handed the lead to sales: assigned it to a rep or queued it for one.
  A lead the router sent to nurture for low fit never reached sales and is not an MQL.
- A lead **reached** a stage when it ever had that status or any later one: a lead reported
  qualified without accepted counts as accepted and contacted, and the status a report
  moved from counts too (lost after converted counts as converted). Lost is reachable only
  from qualified, disqualified and recycled only from a working status.
- **first touch**: the first report of contacted, or of a later stage reported without it.

Feedback's consumer applies each batch to the read model in the transaction that applies it
to the lifecycle (`consumers.feedback_consumer`); `rebuild` replays the topics into an empty
read model. Events of one lead arrive in order per topic but in any order across topics;
every fact merges order-insensitively (`kpi_queries.KpiRepository.merge`), so any
interleaving ends in the same figures, and merging a fact again changes nothing, so a
rebuild may overlap with the consumer.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from handoff_runtime.db import UnitOfWork
from handoff_schemas import (
    CloudEvent,
    LeadAssignedV1,
    LeadCreatedV1,
    LeadQueuedV1,
    LeadScoredV1,
    LeadSlaBreachedV1,
    LeadStatus,
    LeadStatusChangedV1,
)

from .kpi_models import FUNNEL, KpiOutcome, Stage
from .kpi_queries import KpiRepository

S = LeadStatus
STATUS_STAGE: Mapping[LeadStatus, Stage] = {
    S.ASSIGNED: Stage.ASSIGNED,
    S.ACCEPTED: Stage.ACCEPTED,
    S.CONTACTED: Stage.CONTACTED,
    S.QUALIFIED: Stage.QUALIFIED,
    S.CONVERTED: Stage.CONVERTED,
    S.WON: Stage.WON,
    # Leaving the funnel proves only the earliest status it can be left from; the status the
    # report moved from (e.g. lost from converted) proves more.
    S.LOST: Stage.QUALIFIED,
    S.DISQUALIFIED: Stage.ASSIGNED,
    S.RECYCLED: Stage.ASSIGNED,
}
"""The furthest funnel stage a lead must have reached to be reported in each status."""

OUTCOMES = frozenset({S.WON, S.LOST, S.DISQUALIFIED, S.RECYCLED})
"""Statuses that end a sales cycle; each report of one is kept (reasons, revenue)."""

REASON_KINDS = (S.DISQUALIFIED, S.RECYCLED, S.LOST)
"""The outcomes that carry a reason."""


def stage_reached(to_status: LeadStatus, from_status: LeadStatus | None = None) -> Stage:
    """The furthest stage a status report proves the lead reached."""
    reached = STATUS_STAGE[to_status]
    if from_status is not None:
        reached = max(reached, STATUS_STAGE[from_status])
    return reached


def is_touch(status: LeadStatus) -> bool:
    """Whether a report of `status` is a touch: contacted, or a stage only reachable after
    contact (a rep who reports qualified without contacted has touched the lead)."""
    return STATUS_STAGE[status] >= Stage.CONTACTED


def conversion_rates(reached: Mapping[str, int]) -> dict[str, float | None]:
    """reached(next) / reached(step) for each consecutive pair of funnel stages, named
    `<step>_to_<next>`, rounded to 4 places; null when nothing reached the step."""
    rates: dict[str, float | None] = {}
    for step, following in itertools.pairwise(FUNNEL):
        base, done = reached[step.step], reached[following.step]
        rates[f"{step.step}_to_{following.step}"] = round(done / base, 4) if base else None
    return rates


@dataclass(frozen=True)
class LeadFacts:
    """What one event says about a lead; None means "nothing said"."""

    lead_id: str
    created_at: datetime | None = None
    campaign: str | None = None
    source: str | None = None
    fit_grade: str | None = None
    score: float | None = None
    graded_at: datetime | None = None
    stage: Stage | None = None
    mql_at: datetime | None = None
    assigned_at: datetime | None = None
    touched_at: datetime | None = None
    sla_breached_at: datetime | None = None
    team_id: str | None = None
    rep_id: str | None = None
    owned_at: datetime | None = None


def created_facts(event: LeadCreatedV1) -> LeadFacts:
    """A lead came in (or came back, merged): its first-touch attribution."""
    return LeadFacts(
        event.lead_id,
        created_at=event.received_at,
        campaign=event.lead.campaign,
        source=event.lead.source,
        stage=Stage.LEADS,
    )


def scored_facts(event: LeadScoredV1) -> LeadFacts:
    """A lead was (re-)scored: its fit grade."""
    return LeadFacts(
        event.lead_id, fit_grade=event.grade.value, score=event.score, graded_at=event.scored_at
    )


def assigned_facts(event: LeadAssignedV1) -> LeadFacts:
    """A rep got the lead: it is an MQL, assigned, and owned by the rep."""
    return LeadFacts(
        event.lead_id,
        stage=Stage.ASSIGNED,
        mql_at=event.assigned_at,
        assigned_at=event.assigned_at,
        team_id=event.team_id,
        rep_id=event.rep_id,
        owned_at=event.assigned_at,
    )


def queued_facts(event: LeadQueuedV1) -> LeadFacts:
    """The lead waits for a rep of a team: it was handed to sales, so it is an MQL."""
    return LeadFacts(
        event.lead_id,
        stage=Stage.MQL,
        mql_at=event.queued_at,
        team_id=event.team_id,
        owned_at=event.queued_at,
    )


def breach_facts(event: LeadSlaBreachedV1) -> LeadFacts:
    """The owner missed the first-touch deadline (which also proves the assignment)."""
    return LeadFacts(
        event.lead_id,
        stage=Stage.ASSIGNED,
        mql_at=event.assigned_at,
        assigned_at=event.assigned_at,
        sla_breached_at=event.breached_at,
    )


def status_facts(event: LeadStatusChangedV1) -> LeadFacts:
    """Sales reported a status: the stage it proves, a touch, and who owns the lead."""
    owned = event.team_id is not None or event.rep_id is not None
    return LeadFacts(
        event.lead_id,
        stage=stage_reached(event.to_status, event.from_status),
        touched_at=event.occurred_at if is_touch(event.to_status) else None,
        team_id=event.team_id,
        rep_id=event.rep_id,
        owned_at=event.occurred_at if owned else None,
    )


def outcome_of(event_id: str, event: LeadStatusChangedV1) -> KpiOutcome | None:
    """The outcome row a status report adds, if it ended a sales cycle."""
    if event.to_status not in OUTCOMES:
        return None
    won = event.to_status is S.WON
    return KpiOutcome(
        event_id=event_id,
        lead_id=event.lead_id,
        status=event.to_status.value,
        reason=event.reason,
        amount=Decimal(str(event.amount)) if won and event.amount is not None else None,
        rep_id=event.rep_id,
        team_id=event.team_id,
        occurred_at=event.occurred_at,
    )


FACTS: dict[type[Any], Any] = {
    LeadCreatedV1: created_facts,
    LeadScoredV1: scored_facts,
    LeadAssignedV1: assigned_facts,
    LeadQueuedV1: queued_facts,
    LeadSlaBreachedV1: breach_facts,
    LeadStatusChangedV1: status_facts,
}
"""What each event the projection follows says about its lead. Nurture requests are not
followed: a router nurture is not an MQL, and a nurture from sales follows a recycled status,
which is counted from lead.status."""


async def project(uow: UnitOfWork, events: list[CloudEvent[Any]]) -> None:
    """Merge the facts of a batch's events (each of a type in `FACTS`), whatever their types
    and order, in one statement (merging is order-insensitive), and keep each outcome sales
    reported: leads counted and attributed to their first campaign and source (lead.created), their
    latest fit grade (lead.scored), reaching sales and a rep or waiting for one
    (lead.assigned, lead.queued), missed first-touch SLAs, and sales' moves (lead.status)."""
    repo = KpiRepository(uow.session)
    await repo.merge([FACTS[type(e.data)](e.data) for e in events])
    outcomes = [outcome_of(e.id, e.data) for e in events if isinstance(e.data, LeadStatusChangedV1)]
    await repo.record_outcomes([o for o in outcomes if o is not None])
