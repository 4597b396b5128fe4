"""What the scorer consumes: `lead.created` (from its own intake or any producer), and the
lifecycle on `lead.status`, to know which leads sales has closed."""

from __future__ import annotations

from typing import Any

from handoff_runtime.consumer import Consumer
from handoff_runtime.db import UnitOfWork
from handoff_schemas import CloudEvent, LeadCreatedV1, LeadStatusChangedV1

from . import service

leads = Consumer(group="scorer")


@leads.handles(LeadCreatedV1)
async def score_lead(uow: UnitOfWork, event: CloudEvent[Any]) -> None:
    """Score a new lead against the current ICP."""
    await service.score_created_lead(uow, event.data)


@leads.handles(LeadStatusChangedV1)
async def record_outcome(uow: UnitOfWork, event: CloudEvent[Any]) -> None:
    """Note how sales closed a lead."""
    await service.record_outcome(uow, event.data)
