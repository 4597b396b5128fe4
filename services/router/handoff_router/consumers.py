"""What the router consumes: scored leads to route, and status changes that free capacity."""

from __future__ import annotations

from typing import Any

from handoff_runtime.consumer import Consumer
from handoff_runtime.db import UnitOfWork
from handoff_schemas import LEAD_SCORED, LEAD_STATUS, CloudEvent, LeadScoredV1, LeadStatusChangedV1

from . import service
from .settings import RouterSettings


def routing_consumer(settings: RouterSettings) -> Consumer:
    """The router's consumer group, its handlers bound to this process's settings."""
    consumer = Consumer(group="router")
    routing = service.RoutingPolicy(
        nurture_from=settings.nurture_from_grade, account_owner_full=settings.account_owner_full
    )

    @consumer.handles_batch(LeadScoredV1)
    async def route_leads(uow: UnitOfWork, events: list[CloudEvent[Any]]) -> None:
        await service.route_scored_leads(
            uow,
            [event.data for event in events],
            nurture_from=settings.nurture_from_grade,
            account_owner_full=settings.account_owner_full,
        )

    @consumer.handles(LeadStatusChangedV1)
    async def follow_status(uow: UnitOfWork, event: CloudEvent[Any]) -> None:
        await service.lead_status_changed(uow, event.data, routing)

    # nurture requests also travel on lead.status; the router has nothing to do with them
    consumer.subscribe_to(LEAD_SCORED.name, LEAD_STATUS.name)
    return consumer
