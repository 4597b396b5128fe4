"""The router routes a consumed batch of scored leads set-based (the account owners of the
batch read once, and kept as it assigns); on the real embedded PostgreSQL, a batch must end
in exactly what routing its leads one at a time ends in: the same outcomes, owners, rules and
reservations, whichever policy applies when an account's owner is full."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from support.events import scored_lead
from support.infra import Infra, service_database

from handoff_router import service
from handoff_router.repository import RouterRepository
from handoff_runtime.db import Database
from handoff_runtime.statements import statements_sent
from handoff_schemas import FitGrade, LeadScoredV1

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)

# An account seen before the batch (globex), accounts new to it (acme, initech), leads with
# no account; acme outgrows its owner's capacity of 3 within the batch.
ACCOUNTS = ["acme.com", "acme.com", None, "globex.com", "acme.com", "initech.com", "acme.com"]
ACCOUNTS += [None, "globex.com", "initech.com", "globex.com", "acme.com"]


def scored(n: int, domain: str | None) -> LeadScoredV1:
    email = f"buyer{n}@{domain or 'gmail.com'}"
    return scored_lead(f"lead-{n:02d}", at=T0, email=email, account_domain=domain)


@pytest.fixture
def databases(infra: Infra) -> Iterator[tuple[str, str]]:
    with (
        service_database(infra.database_url, "router") as one,
        service_database(infra.database_url, "router") as other,
    ):
        yield one, other


async def prepared(url: str, policy: str) -> Database:
    """A team of three reps (room for 3, 3 and 8 leads), and globex already owned."""
    db = Database(url, schema="router", source="/test")
    async with db.unit_of_work() as uow:
        team = await service.create_team(uow, "Sales")
        await uow.session.flush()
        for name, capacity in (("ann", 3), ("bob", 3), ("cat", 8)):
            await service.create_rep(
                uow, team_id=team.id, name=name, email=f"{name}@example.com", capacity=capacity
            )
        # Ties between equally loaded reps go by id: the same ids in both databases.
        await uow.session.execute(sa.text("UPDATE router.reps SET id = name"))
    async with db.unit_of_work() as uow:
        await route(uow, [scored(0, "globex.com")], policy)
    return db


async def route(uow: Any, batch: list[LeadScoredV1], policy: str) -> list[str]:
    return await service.route_scored_leads(
        uow, batch, nurture_from=FitGrade.D, account_owner_full=policy
    )


async def routing_state(db: Database) -> list[tuple[Any, ...]]:
    """Each lead's decisions, owner and reservation, by rep name (ids differ per database)."""
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                """
                SELECT d.lead_id, d.outcome, d.decision ->> 'rule', owner.name, reserved.name,
                       a.account_domain
                FROM router.decisions d
                LEFT JOIN router.assignments a ON a.lead_id = d.lead_id
                LEFT JOIN router.reps owner ON owner.id = a.rep_id
                LEFT JOIN router.backlog b ON b.lead_id = d.lead_id
                LEFT JOIN router.reps reserved ON reserved.id = b.reserved_rep_id
                ORDER BY d.lead_id, d.id
                """
            )
        )
        return [tuple(row) for row in rows]


@pytest.mark.parametrize("policy", ["route_normally", "queue_for_owner"])
async def test_a_batch_of_account_leads_is_routed_as_one_at_a_time(
    databases: tuple[str, str], policy: str
) -> None:
    leads = [scored(n, domain) for n, domain in enumerate(ACCOUNTS, start=1)]
    batched, alone = [await prepared(url, policy) for url in databases]
    try:
        async with batched.unit_of_work() as uow:
            batch_outcomes = await route(uow, leads, policy)
            # Decisions are staged, not flushed: a read in the transaction still sees them.
            in_transaction = await RouterRepository(uow.session).decisions("lead-05")
        alone_outcomes = []
        for lead in leads:
            async with alone.unit_of_work() as uow:
                alone_outcomes += await route(uow, [lead], policy)
        assert batch_outcomes == alone_outcomes
        state = await routing_state(batched)
        assert state == await routing_state(alone)
        assert [(d.outcome, d.decision["rule"]) for d in in_transaction] == [
            (outcome, rule) for lead_id, outcome, rule, *_ in state if lead_id == "lead-05"
        ]
        assert len(in_transaction) == 1
    finally:
        await batched.dispose()
        await alone.dispose()
    # The accounts were followed: each account_owner decision went to (or waits for) the rep
    # of the account's newest assignment before it.
    owner_of: dict[str, str] = {}
    followed = 0
    for lead_id, _outcome, rule, owner, reserved, _ in state:
        domain = ([None, *ACCOUNTS])[int(lead_id[-2:])] or ""
        if lead_id == "lead-00":
            domain = "globex.com"
        if rule == "account_owner":
            followed += 1
            assert (owner or reserved) == owner_of[domain], (lead_id, state)
        if owner is not None and domain:
            owner_of[domain] = owner
    assert followed >= 6, state
    if policy == "queue_for_owner":
        assert any(reserved for *_, reserved, _ in state), "acme's owner was never full"


async def test_the_statements_of_a_routed_batch_do_not_grow_with_it(infra: Infra) -> None:
    """Routing reads the team, its reps, the accounts' owners and the leads' standing once
    per batch, and the ORM writes each table once at the end: a batch of 40 leads costs the
    same statements as a batch of 4, whether the leads follow their accounts' owners or go
    through the rules. A read per lead (of a team, say) would also flush what the batch had
    written so far, and so write every table once per lead."""
    with service_database(infra.database_url, "router") as url:
        db = Database(url, schema="router", source="/test")
        try:
            async with db.unit_of_work() as uow:
                team = await service.create_team(uow, "Sales")
                await uow.session.flush()
                for n in range(4):
                    await service.create_rep(
                        uow, team_id=team.id, name=f"rep{n}", email=f"r{n}@x.io", capacity=500
                    )
            async with db.unit_of_work() as uow:  # every account gets its owner
                await route(uow, [scored(n, f"account{n}.com") for n in range(8)], "route_normally")
            per_batch: dict[tuple[str, int], int] = {}
            for path, accounts in (("account_owner", True), ("assigned", False)):
                for size in (4, 40):
                    first = 100 + len(per_batch) * 100
                    batch = [
                        scored(first + n, f"account{n % 8}.com" if accounts else None)
                        for n in range(size)
                    ]
                    with statements_sent(db) as sent:
                        async with db.unit_of_work() as uow:
                            outcomes = await route(uow, batch, "route_normally")
                    assert outcomes == [path] * size
                    per_batch[path, size] = len(sent)
        finally:
            await db.dispose()
    assert per_batch["account_owner", 40] == per_batch["account_owner", 4], per_batch
    assert per_batch["assigned", 40] == per_batch["assigned", 4], per_batch
