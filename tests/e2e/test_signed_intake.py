"""Lead intake as marketing automation uses it, on the running system: Standard Webhooks
signatures, idempotent deliveries, size limits, per-field validation, bulk intake and
direct producers. Every refusal is checked to have stored and published nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from e2e.conftest import NEW_SECRET, OLD_SECRET, SIGNED_SOURCE
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook
from support.infra import Infra
from support.kafka import produce, read_topic
from support.system import System

from handoff_runtime.db import create_engine
from handoff_schemas import LEAD_CREATED, LEAD_SCORED, decode, encode, new_event
from handoff_schemas.catalogue import dead_letter_topic
from handoff_schemas.events import LeadCreatedV1, LeadProfile

pytestmark = pytest.mark.e2e


def lead(email: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "email": email or f"buyer.{uuid.uuid4().hex[:10]}@nordwerk.de",
        "company": "Nordwerk Software",
        "title": "Head of Engineering",
        "industry": "Software",
        "employees": 180,
        "country": "DE",
        **fields,
    }


def signed(
    body: bytes,
    *,
    secret: str = NEW_SECRET,
    delivery_id: str | None = None,
    at: datetime | None = None,
) -> dict[str, str]:
    """Headers the official Standard Webhooks client produces for `body`."""
    delivery_id = delivery_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-source": SIGNED_SOURCE,
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(delivery_id, at, body.decode()),
    }


@pytest.fixture(scope="module")
async def db(infra: Infra) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(infra.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def plain() -> AsyncIterator[httpx.AsyncClient]:
    """A client that adds no headers of its own."""
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def stored(db: AsyncEngine) -> tuple[int, int]:
    """How many leads the scorer holds, and how many lead.created it has staged."""
    async with db.connect() as conn:
        leads = await conn.scalar(sa.text("SELECT count(*) FROM scorer.leads"))
        staged = await conn.scalar(
            sa.text("SELECT count(*) FROM scorer.outbox WHERE topic = :t"), {"t": LEAD_CREATED.name}
        )
    return int(leads or 0), int(staged or 0)


async def test_a_delivery_signed_by_the_official_client_is_accepted(
    system: System, plain: httpx.AsyncClient
) -> None:
    body = json.dumps(lead()).encode()
    answer = await plain.post(f"{system.scorer}/v1/leads", content=body, headers=signed(body))
    assert answer.status_code == 202, answer.text
    lead_id = answer.json()["lead_id"]
    assert (await plain.get(f"{system.scorer}/v1/leads/{lead_id}")).status_code == 200


async def test_a_secret_being_rotated_out_still_verifies(
    system: System, plain: httpx.AsyncClient
) -> None:
    body = json.dumps(lead()).encode()
    answer = await plain.post(
        f"{system.scorer}/v1/leads", content=body, headers=signed(body, secret=OLD_SECRET)
    )
    assert answer.status_code == 202, answer.text


async def test_unauthenticated_deliveries_get_401_and_nothing_is_stored_or_published(
    system: System, plain: httpx.AsyncClient, db: AsyncEngine
) -> None:
    body = json.dumps(lead()).encode()
    other_secret = "whsec_" + "c29tZS1vdGhlci1zZW5kZXJzLXNlY3JldC1rZXk="
    tampered = body.replace(b"Nordwerk", b"Nordwerx")
    stale = datetime.now(UTC) - timedelta(minutes=6)
    attempts = {
        "a changed byte": (tampered, signed(body)),
        "no signature headers": (body, {"webhook-source": SIGNED_SOURCE}),
        "no source": (body, {k: v for k, v in signed(body).items() if k != "webhook-source"}),
        "an unknown source": (body, {**signed(body), "webhook-source": "mallory"}),
        "a stale timestamp": (body, signed(body, at=stale)),
        "a future timestamp": (body, signed(body, at=datetime.now(UTC) + timedelta(minutes=6))),
        "the wrong secret": (body, signed(body, secret=other_secret)),
        "a garbled signature": (body, {**signed(body), "webhook-signature": "v1,!!!"}),
        "a non-UTF-8 body": (b"\xff\xfe" + body, signed(body)),
    }
    before = await stored(db)
    for what, (content, headers) in attempts.items():
        answer = await plain.post(f"{system.scorer}/v1/leads", content=content, headers=headers)
        assert answer.status_code == 401, f"{what}: {answer.status_code} {answer.text}"
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"].endswith("/invalid-signature"), what
    assert await stored(db) == before


async def test_a_repeated_delivery_gets_the_same_answer_and_makes_one_lead(
    system: System, plain: httpx.AsyncClient, db: AsyncEngine
) -> None:
    body = json.dumps(lead()).encode()
    headers = signed(body)
    first = await plain.post(f"{system.scorer}/v1/leads", content=body, headers=headers)
    before = await stored(db)
    again = await plain.post(f"{system.scorer}/v1/leads", content=body, headers=headers)
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    assert await stored(db) == before

    reused = json.dumps(lead()).encode()  # another lead under the same webhook-id
    refused = await plain.post(
        f"{system.scorer}/v1/leads",
        content=reused,
        headers=signed(reused, delivery_id=headers["webhook-id"]),
    )
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("/idempotency-key-reused")
    assert await stored(db) == before


async def test_an_idempotency_key_makes_unsigned_retries_safe(
    system: System, http: httpx.AsyncClient, db: AsyncEngine
) -> None:
    key = {"idempotency-key": f"import-{uuid.uuid4().hex}"}
    body = lead()
    first = await http.post(f"{system.scorer}/v1/leads", json=body, headers=key)
    before = await stored(db)
    again = await http.post(f"{system.scorer}/v1/leads", json=body, headers=key)
    assert again.json() == first.json()
    changed = await http.post(f"{system.scorer}/v1/leads", json=lead(), headers=key)
    assert changed.status_code == 409
    assert await stored(db) == before


async def test_oversized_and_invalid_bodies_are_refused_before_anything_is_stored(
    system: System, plain: httpx.AsyncClient, http: httpx.AsyncClient, db: AsyncEngine
) -> None:
    before = await stored(db)
    huge = json.dumps(lead(name="x" * 300_000)).encode()
    too_large = await plain.post(f"{system.scorer}/v1/leads", content=huge, headers=signed(huge))
    assert too_large.status_code == 413
    assert too_large.headers["content-type"] == "application/problem+json"

    wrong = json.dumps(lead(employees="lots", country="Germany")).encode()
    invalid = await plain.post(f"{system.scorer}/v1/leads", content=wrong, headers=signed(wrong))
    assert invalid.status_code == 422
    fields = {e["field"] for e in invalid.json()["errors"]}
    assert {"body.employees", "body.country"} <= fields

    nested = b"[" * 5000 + b"]" * 5000
    deep = await http.post(
        f"{system.scorer}/v1/leads", content=nested, headers={"content-type": "application/json"}
    )
    assert deep.status_code == 422
    assert await stored(db) == before


async def test_a_batch_accepts_the_good_leads_and_names_the_bad_ones(
    system: System, http: httpx.AsyncClient
) -> None:
    known = lead()
    await http.post(f"{system.scorer}/v1/leads", json=known)
    items = [lead(), {"email": "not-an-email"}, known, lead(employees=-5)]
    answer = await http.post(f"{system.scorer}/v1/leads:batch", json={"leads": items})
    assert answer.status_code == 202, answer.text
    result = answer.json()
    assert (result["accepted"], result["updated"], result["rejected"]) == (1, 1, 2)
    by_index = {r["index"]: r for r in result["results"]}
    assert by_index[0]["status"] == "accepted"
    assert by_index[1]["errors"][0]["field"] == "leads.1.email"
    assert by_index[2]["status"] == "updated"
    assert by_index[3]["errors"][0]["field"] == "leads.3.employees"

    too_many = await http.post(
        f"{system.scorer}/v1/leads:batch", json={"leads": [lead() for _ in range(1001)]}
    )
    assert too_many.status_code == 422


async def test_a_thousand_lead_import_is_accepted_and_every_lead_is_scored(
    system: System, http: httpx.AsyncClient
) -> None:
    items = [lead(f"attendee{i}.{uuid.uuid4().hex[:6]}@webinar-guests.io") for i in range(1000)]
    answer = await http.post(f"{system.scorer}/v1/leads:batch", json={"leads": items})
    assert answer.status_code == 202, answer.text
    ids = {r["lead_id"] for r in answer.json()["results"]}
    assert len(ids) == 1000
    keys = {i.encode() for i in ids}
    scored = await read_topic(
        system.bootstrap, LEAD_SCORED.name, until=1000, timeout_s=120, where=lambda r: r.key in keys
    )
    assert {r.key for r in scored} == keys


async def test_direct_producers_are_validated_like_webhooks(
    system: System, http: httpx.AsyncClient
) -> None:
    good_id = uuid.uuid4().hex
    good = new_event(
        LeadCreatedV1(
            lead_id=good_id,
            received_at=datetime.now(UTC),
            lead=LeadProfile(email=f"direct.{good_id[:8]}@nordwerk.de", industry="Software"),
        ),
        source="/marketing-automation",
        subject=good_id,
    )
    bad_id = uuid.uuid4().hex
    bad = json.loads(encode(good))
    bad.update(id=str(uuid.uuid4()), subject=bad_id)
    bad["data"].update(lead_id=bad_id, lead={"email": "not-an-email"})
    await produce(
        system.bootstrap,
        LEAD_CREATED.name,
        [(bad_id.encode(), json.dumps(bad).encode()), (good_id.encode(), encode(good))],
    )
    dead = await read_topic(
        system.bootstrap,
        dead_letter_topic("scorer").name,
        until=1,
        where=lambda r: r.key == bad_id.encode(),
    )
    assert dead, "the invalid lead.created never reached the dead-letter topic"
    headers = {k: v.decode() for k, v in dead[0].headers}
    assert headers["dlq_original_topic"] == LEAD_CREATED.name
    assert "lead.email" in headers["dlq_error"]
    scored = await read_topic(
        system.bootstrap, LEAD_SCORED.name, until=1, where=lambda r: r.key == good_id.encode()
    )
    assert decode(scored[0].value).data.lead.email == f"direct.{good_id[:8]}@nordwerk.de"
    assert (await http.get(f"{system.scorer}/v1/leads/{bad_id}")).status_code == 404
