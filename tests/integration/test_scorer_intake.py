"""The scorer's lead intake on the real embedded PostgreSQL: a new person's first delivery is
stored in one statement (the lead, the delivery's key with its answer, and `lead.created`),
and everything else — a retry, a known person, a key reused with another body, a key another
transaction is claiming — ends exactly as the general path ends it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import Response
from prometheus_client import REGISTRY
from support.infra import Infra, service_database, statements

from handoff_runtime.db import Database
from handoff_runtime.idempotency import (
    DeliveryInProgress,
    IdempotencyConflict,
    body_hash,
    claim,
    remember,
)
from handoff_runtime.webhooks import Delivery
from handoff_schemas import LEAD_CREATED, LeadCreatedV1, decode
from handoff_scorer.api import create_lead

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(infra: Infra) -> AsyncIterator[Database]:
    with service_database(infra.database_url, "scorer") as url:
        db = Database(url, schema="scorer", source="/handoff/scorer")
        try:
            yield db
        finally:
            await db.dispose()


def delivery(delivery_id: str, **lead: Any) -> Delivery:
    body = json.dumps({"company": "Acme", **lead}).encode()
    return Delivery(source="crm", delivery_id=delivery_id, idempotency_key=None, body=body)


def group_sizes() -> tuple[float, float]:
    """Groups the intake's group commit has written in this process, and their items."""
    labels = {"service": "scorer", "group": "new-people"}
    return (
        REGISTRY.get_sample_value("handoff_group_commit_items_count", labels) or 0,
        REGISTRY.get_sample_value("handoff_group_commit_items_sum", labels) or 0,
    )


def body_of(answer: Response) -> Any:
    return json.loads(bytes(answer.body))


async def rows(db: Database, query: str) -> list[tuple[Any, ...]]:
    async with db.engine.connect() as conn:
        return [tuple(row) for row in await conn.execute(sa.text(query))]


async def test_a_new_persons_first_delivery_is_stored_in_one_statement(db: Database) -> None:
    first = delivery("msg-1", email="Ada@Acme.io")
    with statements(db) as sent:
        answer = await create_lead(first, db)
    assert len(sent) == 1, sent
    assert answer.status_code == 202
    body = body_of(answer)
    assert body["status"] == "accepted"
    lead_id = body["lead_id"]

    assert await rows(db, "SELECT id, email, status, cycle FROM scorer.leads") == [
        (lead_id, "ada@acme.io", "received", 1)
    ]
    [(key, request_hash, status_code, response)] = await rows(
        db, "SELECT key, request_hash, status_code, response FROM scorer.idempotency_keys"
    )
    assert (key, request_hash, status_code) == ("crm:msg-1", body_hash(first.body), 202)
    assert response == body
    [(topic, record_key, value)] = await rows(db, "SELECT topic, key, value FROM scorer.outbox")
    assert (topic, record_key) == (LEAD_CREATED.name, lead_id)
    created = decode(value)
    assert isinstance(created.data, LeadCreatedV1)
    assert created.data.lead_id == lead_id
    assert str(created.data.lead.email) == "ada@acme.io"
    assert created.data.received_at.isoformat() == body["received_at"].replace("Z", "+00:00")

    # A retry is answered from the stored answer, and changes nothing.
    again = await create_lead(delivery("msg-1", email="Ada@Acme.io"), db)
    assert again.headers["idempotent-replayed"] == "true"
    assert body_of(again) == body
    assert len(await rows(db, "SELECT 1 FROM scorer.leads")) == 1
    assert len(await rows(db, "SELECT 1 FROM scorer.outbox")) == 1


async def test_a_known_person_in_a_new_delivery_is_merged(db: Database) -> None:
    first = body_of(await create_lead(delivery("msg-1", email="ada@acme.io"), db))
    merged = await create_lead(delivery("msg-2", email="ADA@acme.io", title="CTO"), db)
    assert body_of(merged)["status"] == "updated"
    assert body_of(merged)["lead_id"] == first["lead_id"]
    [(profile,)] = await rows(db, "SELECT profile FROM scorer.leads")
    assert profile["title"] == "CTO"
    assert len(await rows(db, "SELECT 1 FROM scorer.outbox")) == 2
    [(stored,)] = await rows(
        db, "SELECT response FROM scorer.idempotency_keys WHERE key = 'crm:msg-2'"
    )
    assert stored == body_of(merged)


async def test_a_key_reused_with_another_body_writes_no_lead(db: Database) -> None:
    await create_lead(delivery("msg-1", email="ada@acme.io"), db)
    with pytest.raises(IdempotencyConflict):
        await create_lead(delivery("msg-1", email="bob@acme.io"), db)
    assert await rows(db, "SELECT email FROM scorer.leads") == [("ada@acme.io",)]
    assert len(await rows(db, "SELECT 1 FROM scorer.outbox")) == 1


async def test_a_key_being_claimed_elsewhere_is_answered_in_progress(db: Database) -> None:
    """Another transaction holds the key, not yet committed: the one statement cannot see
    it, writes its lead, then waits for the key and finds it taken. It must not answer with
    that lead: the delivery is refused as in progress and its writes are rolled back."""
    other = delivery("msg-1", email="ada@acme.io")
    claimed, release = asyncio.Event(), asyncio.Event()

    async def hold_the_key() -> None:
        async with db.unit_of_work() as uow:
            assert await claim(uow, other.key or "", body_hash(other.body)) is None
            claimed.set()
            await release.wait()
            await remember(uow, other.key or "", 202, {"lead_id": "elsewhere"})

    holder = asyncio.create_task(hold_the_key())
    await claimed.wait()
    racing = asyncio.create_task(create_lead(delivery("msg-1", email="bob@acme.io"), db))
    await asyncio.sleep(0.5)
    assert not racing.done(), "the statement should wait for the key's transaction"
    release.set()
    await holder
    with pytest.raises(DeliveryInProgress):
        await racing
    assert await rows(db, "SELECT email FROM scorer.leads") == []
    assert await rows(db, "SELECT 1 FROM scorer.outbox") == []


async def test_a_burst_of_deliveries_is_written_in_groups_each_as_if_alone(db: Database) -> None:
    """Deliveries that arrive together share transactions (group commit); each still ends as
    it would alone: new people accepted, a person sent twice under two keys merged, a retry
    of a key answered from its first answer, and one lead and one `lead.created` each."""
    people = [delivery(f"new-{n}", email=f"person{n}@acme.io") for n in range(40)]
    twice = [delivery("grace-1", email="grace@navy.io"), delivery("grace-2", email="GRACE@navy.io")]
    retried = [delivery("ada-1", email="ada@acme.io"), delivery("ada-1", email="ada@acme.io")]
    burst = [*people, *twice, *retried]
    groups, items = group_sizes()
    with statements(db) as sent:
        answers = await asyncio.gather(*(create_lead(d, db) for d in burst))
    inserts = [s for s in sent if "INSERT INTO scorer.leads" in s and "unnest" in s]
    assert len(inserts) < len(burst) / 4, f"{len(inserts)} statements for {len(burst)} deliveries"
    # the metric SREs read counts the same groups: every keyed delivery tries the group first
    assert group_sizes() == (groups + len(inserts), items + len(burst))

    bodies = [body_of(answer) for answer in answers]
    assert all(answer.status_code == 202 for answer in answers)
    assert [b["status"] for b in bodies[:40]] == ["accepted"] * 40
    assert sorted(b["status"] for b in bodies[40:42]) == ["accepted", "updated"]
    assert bodies[40]["lead_id"] == bodies[41]["lead_id"]
    assert bodies[42] == bodies[43]  # the retry gets the first answer
    assert sorted("idempotent-replayed" in a.headers for a in answers[42:]) == [False, True]

    leads = await rows(db, "SELECT email FROM scorer.leads")
    assert sorted(email for (email,) in leads) == sorted(
        [f"person{n}@acme.io" for n in range(40)] + ["grace@navy.io", "ada@acme.io"]
    )
    announced = await rows(db, "SELECT key FROM scorer.outbox")
    # one lead.created per lead, and one more for the merge of the second delivery of grace
    assert len(announced) == len(leads) + 1
    keys = await rows(db, "SELECT key FROM scorer.idempotency_keys")
    assert len(keys) == 40 + 2 + 1
