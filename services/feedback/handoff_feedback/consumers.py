"""What feedback consumes, in one consumer group: leads coming in and being scored (so it
knows them), routing outcomes, which start each lead's lifecycle, and, for the shared KPIs,
SLA breaches and sales' own status changes.

Each consumed batch is applied to the lifecycle and to the KPI read model in the same
transaction, so the two never disagree about which events they have seen, and each event is
fetched, decoded and marked processed once. The read model can still be rebuilt alone from
the topics (`python -m handoff_feedback rebuild-kpis`, see `rebuild`)."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from handoff_runtime.consumer import Consumer
from handoff_runtime.db import UnitOfWork
from handoff_schemas import (
    LEAD_CREATED,
    LEAD_ROUTING,
    LEAD_SCORED,
    LEAD_STATUS,
    CloudEvent,
    LeadAssignedV1,
    LeadCreatedV1,
    LeadNurtureRequestedV1,
    LeadQueuedV1,
    LeadScoredV1,
)

from . import service
from .kpis import FACTS, project
from .lifecycle import Policy
from .service import Sighting

FEEDBACK_TOPICS = (LEAD_CREATED.name, LEAD_SCORED.name, LEAD_ROUTING.name, LEAD_STATUS.name)
"""The topics feedback consumes (the KPI rebuild reads the same)."""


async def record_sightings(uow: UnitOfWork, events: list[CloudEvent[Any]], _: Policy) -> None:
    """Leads came in, or came back with new engagement (lead.created), or were scored
    (lead.scored: a higher cycle means a lead re-qualified after nurture)."""
    await service.leads_seen(
        uow,
        [
            Sighting(e.data.lead_id, cycle=1, at=e.time, engaged=True)
            if isinstance(e.data, LeadCreatedV1)
            else Sighting(e.data.lead_id, cycle=e.data.cycle, at=e.time, engaged=False)
            for e in events
        ],
    )


async def record_routing(uow: UnitOfWork, events: list[CloudEvent[Any]], policy: Policy) -> None:
    """Routing outcomes, in order: a rep owns the lead (its lifecycle starts), it waits
    for capacity, or the router sent it to nurture. Feedback's own nurture requests (on
    lead.status, which feedback produces) are not applied back."""
    await service.leads_routed(
        uow,
        [
            e.data
            for e in events
            if not isinstance(e.data, LeadNurtureRequestedV1) or e.data.requested_by == "router"
        ],
        policy,
    )


LifecycleStep = Callable[[UnitOfWork, list[CloudEvent[Any]], Policy], Awaitable[None]]

LIFECYCLE: dict[type[Any], LifecycleStep] = {
    LeadCreatedV1: record_sightings,
    LeadScoredV1: record_sightings,
    LeadAssignedV1: record_routing,
    LeadQueuedV1: record_routing,
    LeadNurtureRequestedV1: record_routing,
}
"""The lifecycle's set-based step for each event type it follows."""


def feedback_consumer(policy: Policy) -> Consumer:
    """Feedback's consumer group, its handler bound to this process's policy."""
    consumer = Consumer(group="feedback")

    @consumer.handles_batch(*(LIFECYCLE.keys() | FACTS.keys()))
    async def apply(uow: UnitOfWork, events: list[CloudEvent[Any]]) -> None:
        """The lifecycle takes the batch's consecutive events for one of its steps together,
        in order; the KPI projection merges the facts of the whole batch at once (merging
        is order-insensitive)."""
        for step, run in itertools.groupby(events, key=lambda e: LIFECYCLE.get(type(e.data))):
            if step is not None:
                await step(uow, list(run), policy)
        await project(uow, [e for e in events if type(e.data) in FACTS])

    consumer.subscribe_to(*FEEDBACK_TOPICS)
    return consumer
