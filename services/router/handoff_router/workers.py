"""The router's capacity watch: every few seconds, each team's load is read in one unit of
work, the capacity gauges are refreshed, and a team whose level (ok, busy, saturated)
differs from the one last announced gets a `handoff.capacity.changed.v1` event."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import structlog

from handoff_runtime.db import UnitOfWork
from handoff_runtime.service import ServiceRuntime
from handoff_schemas import CAPACITY, CapacityChangedV1, CapacityLevel, utcnow

from .capacity import NOT_NEW_LEADS, NOT_RELEASES, TeamLoad, Thresholds, team_load
from .metrics import record_capacity
from .repository import RouterRepository
from .settings import RouterSettings

log = structlog.get_logger(__name__)


def thresholds_of(settings: RouterSettings) -> Thresholds:
    """The capacity level thresholds configured for this router."""
    return Thresholds(busy=settings.busy_utilisation)


async def team_loads(
    repo: RouterRepository, *, now: datetime, window_hours: float
) -> list[TeamLoad]:
    """Every team's load now, with intake and release rates over the last `window_hours`."""
    counts = await repo.capacity_counts(
        now - timedelta(hours=window_hours),
        not_new_rules=NOT_NEW_LEADS,
        not_release_reasons=NOT_RELEASES,
    )
    return [team_load(c, window_hours=window_hours) for c in counts]


async def check_capacity(
    uow: UnitOfWork, settings: RouterSettings, *, now: datetime | None = None
) -> list[CapacityChangedV1]:
    """Refresh the gauges and announce every team whose level changed since it was last
    announced (a team seen for the first time is announced too). The new level and its event
    commit together; while one router instance compares and announces, the others only
    refresh their gauges, so each change is announced once. Returns what was announced."""
    now = now or utcnow()
    thresholds = thresholds_of(settings)
    repo = RouterRepository(uow.session)
    announcer = await repo.try_lock_capacity_levels()
    loads = await team_loads(repo, now=now, window_hours=settings.rate_window_hours)
    reps = await repo.reps()
    record_capacity(
        settings.service_name,
        loads,
        reps,
        now=now,
        thresholds=thresholds,
        rep_limit=settings.rep_metrics_limit,
    )
    if not announcer:
        return []
    announced = await repo.capacity_levels()
    changes = []
    for load in loads:
        level = load.level(thresholds)
        previous = announced.get(load.team_id)
        if previous == level:
            continue
        change = CapacityChangedV1(
            team_id=load.team_id,
            team_name=load.name,
            level=level,
            previous_level=CapacityLevel(previous) if previous else None,
            capacity=load.capacity,
            working=load.working,
            headroom=load.headroom,
            backlog=load.backlog,
            utilisation=load.utilisation,
            hours_until_saturation=load.hours_until_saturation,
            at=now,
        )
        await repo.set_capacity_level(load.team_id, level.value, now)
        await uow.publish(change, topic=CAPACITY.name, subject=load.team_id)
        changes.append(change)
    return changes


async def capacity_watch(runtime: ServiceRuntime) -> None:
    """Check team capacity levels every `capacity_check_interval_s`, until cancelled."""
    settings = runtime.settings
    assert isinstance(settings, RouterSettings)
    while True:
        try:
            async with runtime.db.unit_of_work() as uow:
                changes = await check_capacity(uow, settings)
            for change in changes:
                log.info(
                    "capacity level changed",
                    team_id=change.team_id,
                    level=change.level.value,
                    previous_level=change.previous_level,
                    headroom=change.headroom,
                    backlog=change.backlog,
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("capacity check failed; retrying")
        await asyncio.sleep(settings.capacity_check_interval_s)
