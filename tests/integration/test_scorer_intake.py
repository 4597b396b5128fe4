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
from support.infra import Infra, service_database

from handoff_runtime.db import Database
from handoff_runtime.idempotency import (
    DeliveryInProgress,
    IdempotencyConflict,
    body_hash,
    claim,
    remember,
)
from handoff_runtime.statements import statements_sent
from handoff_runtime.webhooks import Delivery
from handoff_schemas import LEAD_CREATED, LeadCreatedV1, LeadProfile, decode
from handoff_scorer.api import create_lead
from handoff_scorer.service import accept_lead, accept_leads

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
    with statements_sent(db) as sent:
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
    with statements_sent(db) as sent:
        answers = await asyncio.gather(*(create_lead(d, db) for d in burst))
    # the group commit's statement: leads, keys and lead.created together
    inserts = [s for s in sent if "INSERT INTO scorer.leads" in s and "idempotency_keys" in s]
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


async def test_two_replicas_groups_of_the_same_people_end_as_one_at_a_time(db: Database) -> None:
    """Two scorer replicas (each with its own pool and group commit) take bursts naming the
    same people under their own keys, one in the order the other reverses, at once: a group
    that meets a person another replica's group is writing waits for it and then merges into
    it (or, if the two deadlock, PostgreSQL aborts one and that group is written again one
    delivery at a time). Every delivery is answered, each person is one lead, and each
    delivery announced one `lead.created`."""
    replica = Database(
        db.engine.url.render_as_string(hide_password=False),
        schema="scorer",
        source="/handoff/scorer",
    )
    shared = [f"shared{n}@acme.io" for n in range(30)]
    first = [delivery(f"a-{n}", email=email) for n, email in enumerate(shared)]
    second = [delivery(f"b-{n}", email=email) for n, email in enumerate(reversed(shared))]
    first += [delivery(f"a-only-{n}", email=f"a{n}@acme.io") for n in range(10)]
    second += [delivery(f"b-only-{n}", email=f"b{n}@acme.io") for n in range(10)]
    try:
        answers = await asyncio.gather(
            *(create_lead(d, db) for d in first), *(create_lead(d, replica) for d in second)
        )
    finally:
        await replica.dispose()

    assert all(answer.status_code == 202 for answer in answers)
    by_key = {
        d.delivery_id: body_of(answer) for d, answer in zip([*first, *second], answers, strict=True)
    }
    for n, email in enumerate(shared):
        a, b = by_key[f"a-{n}"], by_key[f"b-{len(shared) - 1 - n}"]
        assert a["lead_id"] == b["lead_id"], email
        assert sorted([a["status"], b["status"]]) == ["accepted", "updated"], email
    assert all(by_key[f"{r}-only-{n}"]["status"] == "accepted" for r in "ab" for n in range(10))

    leads = await rows(db, "SELECT email FROM scorer.leads")
    assert sorted(email for (email,) in leads) == sorted(
        [*shared, *(f"a{n}@acme.io" for n in range(10)), *(f"b{n}@acme.io" for n in range(10))]
    )
    announced = await rows(db, "SELECT key FROM scorer.outbox")
    assert len(announced) == len(first) + len(second)
    lead_of_email = dict(await rows(db, "SELECT email, id FROM scorer.leads"))
    assert sorted(key for (key,) in announced) == sorted(
        [*(lead_of_email[e] for e in shared), *lead_of_email.values()]
    )
    stored = dict(await rows(db, "SELECT key, response FROM scorer.idempotency_keys"))
    assert {key.removeprefix("crm:"): answer for key, answer in stored.items()} == by_key


async def _intake_state(db: Database) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """The leads by email with their profiles, and the `lead.created` events in the order
    announced, each as the email of its lead and the profile it carries."""
    leads = await rows(db, "SELECT email, profile, id FROM scorer.leads ORDER BY email")
    email_of = {lead_id: email for email, _, lead_id in leads}
    announced = await rows(
        db, "SELECT key, value FROM scorer.outbox WHERE topic = 'handoff.lead.created' ORDER BY id"
    )
    events = [
        (email_of[key], decode(value).data.lead.model_dump(mode="json")) for key, value in announced
    ]
    return [(email, profile) for email, profile, _ in leads], events


async def test_a_batch_of_leads_ends_as_its_leads_one_at_a_time(db: Database) -> None:
    """`accept_leads` stores a batch set-based (the new people in one statement, the leads
    merged into read and locked in one): the leads, their merged profiles, the answers and
    the `lead.created` events are those of the same leads one at a time (`accept_lead`, a
    batch of one), with people known before, people sent twice in the batch (new and known,
    in other spellings) and new people."""
    known = [LeadProfile(email="ada@acme.io", title="CTO"), LeadProfile(email="bob@acme.io")]
    batch = [
        LeadProfile(email="new1@acme.io", name="New"),
        LeadProfile(email="ADA@acme.io", company="Acme"),
        LeadProfile(email="new2@acme.io"),
        LeadProfile(email="New1@Acme.io", title="VP Sales"),
        LeadProfile(email="ada@ACME.io", industry="Software"),
        LeadProfile(email="bob@acme.io", country="DE"),
        LeadProfile(email="new1@acme.io", company="Other"),
    ]
    outcomes, states = [], []
    for way in ("one at a time", "set-based"):
        async with db.engine.begin() as conn:
            await conn.execute(sa.text("TRUNCATE scorer.leads, scorer.outbox CASCADE"))
        async with db.unit_of_work() as uow:
            for profile in known:
                await accept_lead(uow, profile)
        async with db.unit_of_work() as uow:
            if way == "one at a time":
                accepted = [await accept_lead(uow, profile) for profile in batch]
            else:
                accepted = await accept_leads(uow, batch)
            answers = [(lead.email, lead.is_new) for lead in accepted]
        outcomes.append(answers)
        states.append(await _intake_state(db))
    assert outcomes[1] == outcomes[0]
    assert states[1] == states[0]
    assert [is_new for _, is_new in outcomes[0]] == [True, False, True, False, False, False, False]
    leads, events = states[0]
    assert [email for email, _ in leads] == [
        "ada@acme.io",
        "bob@acme.io",
        "new1@acme.io",
        "new2@acme.io",
    ]
    assert len(events) == len(known) + len(batch)
    profiles = dict(leads)
    assert (profiles["ada@acme.io"]["title"], profiles["ada@acme.io"]["company"]) == ("CTO", "Acme")
    assert profiles["ada@acme.io"]["industry"] == "Software"
    assert profiles["bob@acme.io"]["country"] == "DE"
    new1 = profiles["new1@acme.io"]
    assert (new1["name"], new1["title"], new1["company"]) == ("New", "VP Sales", "Other")
    # each lead.created carries the lead as it stood after that delivery
    assert [profile.get("title") for email, profile in events if email == "new1@acme.io"] == [
        None,
        "VP Sales",
        "VP Sales",
    ]


async def test_the_statements_of_a_batch_of_new_leads_do_not_grow_with_it(db: Database) -> None:
    """A batch of 40 new people takes as many statements as a batch of 4."""
    sent_for: dict[int, int] = {}
    for size in (4, 40):
        batch = [LeadProfile(email=f"p{size}-{n}@acme.io") for n in range(size)]
        with statements_sent(db) as sent:
            async with db.unit_of_work() as uow:
                accepted = await accept_leads(uow, batch)
        assert all(lead.is_new for lead in accepted)
        sent_for[size] = len(sent)
    assert sent_for[40] == sent_for[4], sent_for
