"""The scorer applies a consumed batch of `lead.created` set-based (the ICP read and the
known leads locked once per batch); on the real embedded PostgreSQL, a batch must end in
exactly what applying its events one at a time ends in: the same leads, merges, scores and
announcements, in the same order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from support.infra import Infra, service_database

from handoff_runtime.db import Database
from handoff_schemas import LEAD_SCORED, Activity, LeadCreatedV1, LeadProfile, decode
from handoff_scorer import service
from handoff_scorer.repository import ScorerRepository
from handoff_scorer.scoring import load_demo_icp

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)


@pytest.fixture
async def databases(infra: Infra) -> AsyncIterator[tuple[Database, Database]]:
    """Two databases of their own with the scorer's schema and the demo ICP published."""
    with (
        service_database(infra.database_url, "scorer") as one_url,
        service_database(infra.database_url, "scorer") as other_url,
    ):
        one, other = (
            Database(url, schema="scorer", source="/handoff/scorer") for url in (one_url, other_url)
        )
        try:
            for db in (one, other):
                async with db.unit_of_work() as uow:
                    await service.publish_icp(uow, load_demo_icp(), now=T0)
            yield one, other
        finally:
            await one.dispose()
            await other.dispose()


def created(lead_id: str, email: str, **profile: Any) -> LeadCreatedV1:
    return LeadCreatedV1(lead_id=lead_id, received_at=T0, lead=LeadProfile(email=email, **profile))


async def state(db: Database) -> dict[str, Any]:
    """What scoring left behind, without the times it took: leads, scores, announcements."""
    async with db.engine.connect() as conn:
        leads = (
            await conn.execute(
                sa.text(
                    "SELECT id, email, profile, status, score, grade, cycle, account_domain "
                    "FROM scorer.leads ORDER BY id"
                )
            )
        ).all()
        scores = (
            await conn.execute(
                sa.text("SELECT lead_id, score, grade FROM scorer.lead_scores ORDER BY id")
            )
        ).all()
        outbox = (
            await conn.execute(
                sa.text(
                    "SELECT topic, key, value FROM scorer.outbox WHERE topic = :topic ORDER BY id"
                ),
                {"topic": LEAD_SCORED.name},
            )
        ).all()
    announced = []
    for topic, key, value in outbox:
        data = decode(value).data
        announced.append((topic, key, data.lead_id, data.grade, data.lead.model_dump()))
    return {"leads": leads, "scores": scores, "announced": announced}


async def test_a_batch_ends_where_its_events_one_at_a_time_end(
    databases: tuple[Database, Database],
) -> None:
    """A new lead seen twice, a lead from another producer merged by email into a known
    one, that known lead's own event, and another new lead: all in one batch."""
    known = created("kim-1", "Kim@Globex.com", company="Globex", employees=800)
    webinar = Activity(type="webinar_attended", occurred_at=T0 - timedelta(days=1))
    batch = [
        created("ada-1", "ada@acme.io", company="Acme", title="VP Engineering"),
        created("ada-1", "ada@acme.io", industry="Software", activities=[webinar]),
        created("other-producer-7", "kim@globex.com", title="CTO", country="DE"),
        created("kim-1", "kim@globex.com", technologies=["Kubernetes"]),
        created("bob-1", "bob@gmail.com", employees=3),
    ]
    one_at_a_time, batched = databases
    for db in databases:
        async with db.unit_of_work() as uow:
            await service.score_created_leads(uow, [known])

    for event in batch:
        async with one_at_a_time.unit_of_work() as uow:
            await service.score_created_leads(uow, [event])
    async with batched.unit_of_work() as uow:
        scored = await service.score_created_leads(uow, batch)
        # Scorings are staged, not flushed: a read in the transaction still sees them.
        ada_in_transaction = await ScorerRepository(uow.session).score_history("ada-1")

    expected, got = await state(one_at_a_time), await state(batched)
    assert got == expected
    ada_scores = [(s.score, s.grade) for s in reversed(ada_in_transaction)]
    assert ada_scores == [
        (score, grade) for lead_id, score, grade in got["scores"] if lead_id == "ada-1"
    ]
    assert len(ada_scores) == 2
    assert [s.lead_id if s else None for s in scored] == [
        "ada-1",
        "ada-1",
        "kim-1",
        "kim-1",
        "bob-1",
    ]
    assert {lead.id for lead in got["leads"]} == {"ada-1", "kim-1", "bob-1"}
    assert [a[0] for a in got["announced"]] == [LEAD_SCORED.name] * 6
    kim = next(lead for lead in got["leads"] if lead.id == "kim-1")
    assert (kim.profile["title"], kim.profile["technologies"]) == ("CTO", ["Kubernetes"])
