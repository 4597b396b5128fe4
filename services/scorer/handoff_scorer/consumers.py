"""What the scorer consumes: `lead.created` (from its own intake or any producer), and the
lifecycle on `lead.status`, to know which leads sales has closed and until when a lead sales
let go is nurtured."""

from __future__ import annotations

from typing import Any

from handoff_runtime.consumer import Consumer
from handoff_runtime.db import UnitOfWork
from handoff_schemas import (
    LEAD_CREATED,
    LEAD_STATUS,
    CloudEvent,
    LeadCreatedV1,
    LeadNurtureRequestedV1,
    LeadStatusChangedV1,
)

from . import service

leads = Consumer(group="scorer")


@leads.handles_batch(LeadCreatedV1)
async def score_leads(uow: UnitOfWork, events: list[CloudEvent[Any]]) -> None:
    """Score new leads against the current ICP, or record new engagement of known ones."""
    await service.score_created_leads(uow, [event.data for event in events])


@leads.handles(LeadStatusChangedV1)
async def record_outcome(uow: UnitOfWork, event: CloudEvent[Any]) -> None:
    """Note how sales closed a lead."""
    await service.record_outcome(uow, event.data)


@leads.handles(LeadNurtureRequestedV1)
async def record_nurture_request(uow: UnitOfWork, event: CloudEvent[Any]) -> None:
    """Note until when a lead sales let go is nurtured."""
    await service.record_nurture_request(uow, event.data)


# Nurture requests also travel on lead.routing (the router's own); sales' are on lead.status.
leads.subscribe_to(LEAD_CREATED.name, LEAD_STATUS.name)
