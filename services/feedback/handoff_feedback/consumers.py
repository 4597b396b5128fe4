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


def lifecycle_consumer(policy: Policy) -> Consumer:
    """Feedback's lifecycle consumer group, its handlers bound to this process's policy."""
    consumer = Consumer(group="feedback")

    @consumer.handles(LeadCreatedV1)
    async def record_intake(uow: UnitOfWork, event: CloudEvent[Any]) -> None:
        """A lead came in, or came back with new engagement."""
        await service.lead_seen(uow, event.data.lead_id, cycle=1, at=event.time, engaged=True)

    @consumer.handles(LeadScoredV1)
    async def record_scored(uow: UnitOfWork, event: CloudEvent[Any]) -> None:
        """A lead was scored; a higher cycle means it re-qualified after nurture."""
        await service.lead_seen(
            uow, event.data.lead_id, cycle=event.data.cycle, at=event.time, engaged=False
        )

    @consumer.handles(LeadAssignedV1)
    async def record_owner(uow: UnitOfWork, event: CloudEvent[Any]) -> None:
        """A rep owns the lead: its lifecycle starts."""
        await service.lead_assigned(uow, event.data, policy)

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
