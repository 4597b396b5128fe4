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

    @consumer.handles_batch(LeadCreatedV1)
    async def record_intake(uow: UnitOfWork, events: list[CloudEvent[Any]]) -> None:
        """Leads came in, or came back with new engagement."""
        await service.leads_seen(
            uow, [Sighting(e.data.lead_id, cycle=1, at=e.time, engaged=True) for e in events]
        )

    @consumer.handles_batch(LeadScoredV1)
    async def record_scored(uow: UnitOfWork, events: list[CloudEvent[Any]]) -> None:
        """Leads were scored; a higher cycle means a lead re-qualified after nurture."""
        await service.leads_seen(
            uow,
            [
                Sighting(e.data.lead_id, cycle=e.data.cycle, at=e.time, engaged=False)
                for e in events
            ],
        )

    @consumer.handles_batch(LeadAssignedV1)
    async def record_owner(uow: UnitOfWork, events: list[CloudEvent[Any]]) -> None:
        """A rep owns each lead: its lifecycle starts."""
        await service.leads_assigned(uow, [event.data for event in events], policy)

    @consumer.handles(LeadQueuedV1)
    async def record_queued(uow: UnitOfWork, event: CloudEvent[Any]) -> None:
        """The lead waits for capacity."""
        await service.lead_queued(uow, event.data)

    @consumer.handles(LeadNurtureRequestedV1)
    async def record_nurture(uow: UnitOfWork, event: CloudEvent[Any]) -> None:
        """The router sent the lead to nurture (feedback's own requests are not consumed
        back: nurture requests also travel on lead.status, which feedback produces)."""
        if event.data.requested_by == "router":
            await service.lead_nurtured(uow, event.data)

    consumer.subscribe_to(LEAD_CREATED.name, LEAD_SCORED.name, LEAD_ROUTING.name)
    return consumer
