"""The router's timers: first-touch deadlines and backlog upkeep. Both live in the database
(an active assignment and its lead's grade; a backlog row's queue time), so they survive
restarts, and each fires once whichever router instance finds it due: the service functions
re-check under the team's lock."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from handoff_runtime.service import ServiceRuntime
from handoff_schemas import utcnow

from . import service
from .repository import RouterRepository
from .settings import RouterSettings

log = structlog.get_logger(__name__)

DUE_BATCH = 50


def sla_policy(settings: RouterSettings) -> service.SlaPolicy:
    """The SLA policy configured for this router."""
    return service.SlaPolicy(
        first_touch={
            grade.value: timedelta(minutes=minutes)
            for grade, minutes in settings.sla_first_touch_minutes.items()
        },
        max_reassignments=settings.sla_max_reassignments,
        business_hours=settings.sla_business_hours,
    )


async def first_touch_deadlines(runtime: ServiceRuntime) -> None:
    """Fire due first-touch deadlines, one lead per transaction, until cancelled."""
    settings = runtime.settings
    assert isinstance(settings, RouterSettings)
    policy = sla_policy(settings)
    while True:
        try:
            async with runtime.db.unit_of_work() as uow:
                due = await RouterRepository(uow.session).due_first_touches(
                    policy.deadline_seconds, limit=DUE_BATCH
                )
            for assignment_id in due:
                async with runtime.db.unit_of_work() as uow:
                    if await service.breach_first_touch(uow, assignment_id, policy):
                        log.info("first-touch deadline missed", assignment_id=assignment_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("first-touch check failed; retrying")
        await asyncio.sleep(settings.sla_check_interval_s)


async def backlog_upkeep(runtime: ServiceRuntime) -> None:
    """Until cancelled: send leads queued longer than the configured age to nurture, and
    drain every backlog, since time alone can make room (a rep back from out of office, a
    shift starting, a new day under a daily cap)."""
    settings = runtime.settings
    assert isinstance(settings, RouterSettings)
    max_age = timedelta(hours=settings.backlog_max_age_hours)
    while True:
        try:
            async with runtime.db.unit_of_work() as uow:
                expired = await RouterRepository(uow.session).queued_before(
                    utcnow() - max_age, limit=DUE_BATCH
                )
            for lead_id in expired:
                async with runtime.db.unit_of_work() as uow:
                    if await service.expire_queued_lead(uow, lead_id, max_age=max_age):
                        log.info("queued too long: sent to nurture", lead_id=lead_id)
            async with runtime.db.unit_of_work() as uow:
                teams = await RouterRepository(uow.session).teams_with_backlog()
            for team_id in teams:
                async with runtime.db.unit_of_work() as uow:
                    await service.drain_team(uow, team_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("backlog upkeep failed; retrying")
        await asyncio.sleep(settings.sla_check_interval_s)
