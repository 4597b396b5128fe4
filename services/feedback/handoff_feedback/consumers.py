"""What feedback consumes: leads coming in and being scored (so it knows them), and routing
outcomes, which start each lead's lifecycle."""

from __future__ import annotations

from typing import Any

from handoff_runtime.consumer import Consumer
from handoff_runtime.db import UnitOfWork
from handoff_schemas import (
    LEAD_CREATED,
    LEAD_ROUTING,
    LEAD_SCORED,
    CloudEvent,
    LeadAssignedV1,
    LeadCreatedV1,
    LeadNurtureRequestedV1,
    LeadQueuedV1,
    LeadScoredV1,
)

from . import service
from .lifecycle import Policy
from .service import Sighting


def lifecycle_consumer(policy: Policy) -> Consumer:
    """Feedback's lifecycle consumer group, its handlers bound to this process's policy."""
    consumer = Consumer(group="feedback")

    @consumer.handles_batch(LeadCreatedV1, LeadScoredV1)
    async def record_sightings(uow: UnitOfWork, events: list[CloudEvent[Any]]) -> None:
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

    @consumer.handles_batch(LeadAssignedV1, LeadQueuedV1, LeadNurtureRequestedV1)
    async def record_routing(uow: UnitOfWork, events: list[CloudEvent[Any]]) -> None:
        """Routing outcomes, in order: a rep owns the lead (its lifecycle starts), it waits
        for capacity, or the router sent it to nurture. Feedback's own nurture requests are
        not consumed back: they travel on lead.status, which feedback produces."""
        await service.leads_routed(
            uow,
            [
                e.data
                for e in events
                if not isinstance(e.data, LeadNurtureRequestedV1) or e.data.requested_by == "router"
            ],
            policy,
        )

    consumer.subscribe_to(LEAD_CREATED.name, LEAD_SCORED.name, LEAD_ROUTING.name)
    return consumer
