"""What feedback consumes: routing outcomes, which start each lead's lifecycle."""

from __future__ import annotations

from typing import Any

from handoff_runtime.consumer import Consumer
from handoff_runtime.db import UnitOfWork
from handoff_schemas import (
    LEAD_ROUTING,
    CloudEvent,
    LeadAssignedV1,
    LeadNurtureRequestedV1,
    LeadQueuedV1,
)

from . import service

lifecycle = Consumer(group="feedback")


@lifecycle.handles(LeadAssignedV1)
async def record_owner(uow: UnitOfWork, event: CloudEvent[Any]) -> None:
    """A rep owns the lead: its lifecycle starts."""
    await service.lead_assigned(uow, event.data)


@lifecycle.handles(LeadQueuedV1)
async def record_queued(uow: UnitOfWork, event: CloudEvent[Any]) -> None:
    """The lead waits for capacity."""
    await service.lead_queued(uow, event.data)


@lifecycle.handles(LeadNurtureRequestedV1)
async def record_nurture(uow: UnitOfWork, event: CloudEvent[Any]) -> None:
    """The router sent the lead to nurture (feedback's own requests are not consumed back)."""
    if event.data.requested_by == "router":
        await service.lead_nurtured(uow, event.data)


# Nurture requests also travel on lead.status, which feedback itself produces.
lifecycle.subscribe_to(LEAD_ROUTING.name)
