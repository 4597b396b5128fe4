"""Capacity levels on the real embedded PostgreSQL: the intake and release counts read the
rate window only and count neither backlog drains nor reassignments, and with several router
instances checking at once each level change is announced exactly once, through the outbox.

This module gets a database of its own (the router's migrations applied)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from support.events import scored_lead
from support.infra import Infra, service_database

from handoff_router import service
from handoff_router.models import Assignment, Decision
from handoff_router.repository import RouterRepository
from handoff_router.settings import RouterSettings
from handoff_router.workers import check_capacity, team_loads
from handoff_runtime.db import Database
from handoff_schemas import (
    CAPACITY,
    FitGrade,
    LeadStatus,
    LeadStatusChangedV1,
    decode,
)

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
SETTINGS = RouterSettings(rate_window_hours=4, busy_utilisation=0.8)


@pytest.fixture(scope="module")
async def db(infra: Infra) -> AsyncIterator[Database]:
    """The router's tables in a fresh database of this module."""
    with service_database(infra.database_url, "router") as url:
        database = Database(url, schema="router", source="/handoff/router", pool_size=8)
        try:
            yield database
        finally:
            await database.dispose()


async def new_team(db: Database, name: str, *capacities: int) -> tuple[str, list[str]]:
    async with db.unit_of_work() as uow:
        team = await service.create_team(uow, name)
        await uow.session.flush()
        reps = [
            await service.create_rep(
                uow, team_id=team.id, name=f"rep{i}", email=f"rep{i}@acme.io", capacity=c
            )
            for i, c in enumerate(capacities)
        ]
    return team.id, [r.id for r in reps]


async def route_to(db: Database, team_id: str, lead_id: str) -> str:
    async with db.unit_of_work() as uow:
        await service.replace_rules(uow, [{"name": "all", "team_id": team_id, "conditions": {}}])
        (outcome,) = await service.route_scored_leads(
            uow, [scored_lead(lead_id, at=NOW)], nurture_from=FitGrade.D
        )
        return outcome


async def announced(db: Database, team_id: str) -> list[str]:
    """The levels announced for a team, in outbox order."""
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT value FROM router.outbox WHERE topic = :topic AND key = :key ORDER BY id"
            ),
            {"topic": CAPACITY.name, "key": team_id},
        )
        return [decode(value).data.level.value for (value,) in rows]


async def checks_at_once(db: Database, instances: int = 6) -> None:
    """Several router instances check capacity at the same moment."""

    async def one() -> None:
        async with db.unit_of_work() as uow:
            await check_capacity(uow, SETTINGS)

    await asyncio.gather(*(one() for _ in range(instances)))


async def test_each_level_change_is_announced_once_by_concurrent_instances(
    db: Database,
) -> None:
    team_id, _ = await new_team(db, "Concurrent", 1, 1)

    await checks_at_once(db)
    await checks_at_once(db)
    assert await announced(db, team_id) == ["ok"]

    assert await route_to(db, team_id, f"lead-{uuid.uuid4().hex}") == "assigned"
    await checks_at_once(db)
    assert await announced(db, team_id) == ["ok"]  # 1 of 2 slots: 0.5 is still ok

    assert await route_to(db, team_id, f"lead-{uuid.uuid4().hex}") == "assigned"
    await checks_at_once(db)
    await checks_at_once(db)
    assert await announced(db, team_id) == ["ok", "saturated"]

    async with db.engine.connect() as conn:
        stored = (
            await conn.execute(
                sa.text("SELECT level FROM router.capacity_levels WHERE team_id = :t"),
                {"t": team_id},
            )
        ).scalar_one()
    assert stored == "saturated"


async def test_rates_count_new_leads_and_releases_in_the_window_only(db: Database) -> None:
    team_id, (rep_id,) = await new_team(db, "Rates", 10)
    inside, outside = NOW - timedelta(hours=1), NOW - timedelta(hours=5)

    def decision(outcome: str, rule: str, at: datetime) -> Decision:
        return Decision(
            lead_id=uuid.uuid4().hex,
            outcome=outcome,
            decided_at=at,
            decision={"rule": rule, "team_id": team_id},
        )

    def released(reason: str, at: datetime) -> Assignment:
        return Assignment(
            lead_id=uuid.uuid4().hex,
            rep_id=rep_id,
            team_id=team_id,
            active=False,
            assigned_at=at - timedelta(minutes=5),
            released_at=at,
            release_reason=reason,
        )

    async with db.unit_of_work() as uow:
        uow.session.add_all(
            [
                decision("assigned", "all", inside),
                decision("queued", "fallback_team", inside),
                decision("queued", "all", inside),
                decision("assigned", "backlog_drain", inside),  # counted when it was queued
                decision("assigned", "sla_reassignment", inside),  # not a new lead
                decision("nurture", "nurture_from_grade_D", inside),  # never reached sales
                decision("assigned", "all", outside),  # before the window
                released(LeadStatus.DISQUALIFIED.value, inside),
                released(LeadStatus.QUALIFIED.value, inside),
                released("sla_breached", inside),  # taken away to be reassigned
                released(LeadStatus.DISQUALIFIED.value, outside),
            ]
        )

    async with db.unit_of_work() as uow:
        loads = await team_loads(RouterRepository(uow.session), now=NOW, window_hours=4)
    (load,) = (x for x in loads if x.team_id == team_id)
    assert load.intake_per_hour == 3 / 4
    assert load.release_per_hour == 2 / 4
    assert (load.capacity, load.working, load.headroom, load.backlog) == (10, 0, 10, 0)
    assert load.hours_until_saturation == pytest.approx(10 / (3 / 4 - 2 / 4))


async def test_headroom_counts_active_reps_only_and_a_release_shows_at_once(
    db: Database,
) -> None:
    team_id, (first,) = await new_team(db, "Headroom", 2)
    lead_id = f"lead-{uuid.uuid4().hex}"
    assert await route_to(db, team_id, lead_id) == "assigned"
    async with db.unit_of_work() as uow:
        await service.create_rep(uow, team_id=team_id, name="second", email="s@acme.io", capacity=3)
        await service.update_rep(uow, first, active=False)

    async def load_now() -> tuple[int, int, int, float]:
        async with db.unit_of_work() as uow:
            loads = await team_loads(RouterRepository(uow.session), now=NOW, window_hours=4)
        (load,) = (x for x in loads if x.team_id == team_id)
        return load.capacity, load.working, load.headroom, load.utilisation

    # The paused rep still works their lead, but only the active rep's 3 slots are room.
    assert await load_now() == (3, 1, 3, 0.0)

    async with db.unit_of_work() as uow:
        await service.release_lead(
            uow,
            LeadStatusChangedV1(
                lead_id=lead_id,
                from_status=LeadStatus.ASSIGNED,
                to_status=LeadStatus.DISQUALIFIED,
                rep_id=first,
                reason="no_budget",
                occurred_at=NOW,
                working=False,
            ),
        )
    assert await load_now() == (3, 0, 3, 0.0)


async def test_only_reps_with_a_daily_cap_are_counted_and_the_cap_holds(db: Database) -> None:
    team_id, (capped, free) = await new_team(db, "Daily cap", 10, 10)
    async with db.unit_of_work() as uow:
        await service.update_rep(uow, capped, daily_cap=2)
    owners = [await route_to(db, team_id, f"daily-{uuid.uuid4().hex[:8]}") for _ in range(6)]
    assert owners.count("assigned") == 6
    async with db.unit_of_work() as uow:
        today = await RouterRepository(uow.session).assigned_today(team_id)
        rows = await uow.session.execute(
            sa.text(
                "SELECT rep_id, count(*) FROM router.assignments WHERE team_id = :team "
                "GROUP BY rep_id"
            ),
            {"team": team_id},
        )
        per_rep = {rep_id: count for rep_id, count in rows}
    assert today == {capped: 2}
    assert per_rep == {capped: 2, free: 4}
