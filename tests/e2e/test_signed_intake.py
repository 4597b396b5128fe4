"""Lead intake as marketing automation uses it, on the running system: Standard Webhooks
signatures, idempotent deliveries, size limits, per-field validation, bulk intake and
direct producers. Every refusal is checked to have stored and published nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
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


RETIRED_SECRET = "whsec_" + "cmV0aXJlZC1zZWNyZXQtcmV0aXJlZC1zZWNyZXQtcmV0aXJlZA=="
"""A secret the source signed with before an earlier rotation and no longer lists."""
OTHER_SECRET = "whsec_" + "c29tZS1vdGhlci1zZW5kZXJzLXNlY3JldC1rZXk="
"""Another sender's secret, never configured for the source."""


def signed_bytes(body: bytes, *, secret: str = NEW_SECRET, delivery_id: str) -> dict[str, str]:
    """Headers for `body` signed over its bytes, as the Standard Webhooks spec defines the
    signature (a sender whose body is not text cannot use the library's `sign`)."""
    at = int(datetime.now(UTC).timestamp())
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{delivery_id}.{at}.".encode() + body, hashlib.sha256).digest()
    return {
        "content-type": "application/json",
        "webhook-source": SIGNED_SOURCE,
        "webhook-id": delivery_id,
        "webhook-timestamp": str(at),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


@dataclass(frozen=True)
class Refusal:
    """A delivery the scorer must refuse, and how: status, problem type, and a text the
    answer names (in `detail`, or as the field of the first validation error)."""

    build: Callable[[str, str], tuple[bytes | Callable[[], AsyncIterator[bytes]], dict[str, str]]]
    """(email, webhook-id) -> (body or a streamed body, headers)."""
    status: int
    problem: str
    names: str


def _body(email: str, **fields: Any) -> bytes:
    return json.dumps(lead(email, campaign="refused", **fields)).encode()


def _tampered(email: str, delivery_id: str) -> tuple[bytes, dict[str, str]]:
    body = _body(email)
    return body.replace(b"Nordwerk", b"Nordwerx"), signed(body, delivery_id=delivery_id)


def _stale(email: str, delivery_id: str) -> tuple[bytes, dict[str, str]]:
    at = datetime.now(UTC) - timedelta(minutes=6)
    return _body(email), signed(_body(email), delivery_id=delivery_id, at=at)


def _future(email: str, delivery_id: str) -> tuple[bytes, dict[str, str]]:
    at = datetime.now(UTC) + timedelta(minutes=6)
    return _body(email), signed(_body(email), delivery_id=delivery_id, at=at)


def _missing(header: str) -> Callable[[str, str], tuple[bytes, dict[str, str]]]:
    def build(email: str, delivery_id: str) -> tuple[bytes, dict[str, str]]:
        return _body(email), without(signed(_body(email), delivery_id=delivery_id), header)

    return build


def _secret(secret: str) -> Callable[[str, str], tuple[bytes, dict[str, str]]]:
    def build(email: str, delivery_id: str) -> tuple[bytes, dict[str, str]]:
        return _body(email), signed(_body(email), delivery_id=delivery_id, secret=secret)

    return build


def _renamed(email: str, delivery_id: str) -> tuple[bytes, dict[str, str]]:
    # A captured delivery re-sent under a new webhook-id, to slip past the idempotency key.
    captured = signed(_body(email), delivery_id=f"msg_{uuid.uuid4().hex}")
    return _body(email), {**captured, "webhook-id": delivery_id}


def _header(name: str, value: str) -> Callable[[str, str], tuple[bytes, dict[str, str]]]:
    def build(email: str, delivery_id: str) -> tuple[bytes, dict[str, str]]:
        return _body(email), {**signed(_body(email), delivery_id=delivery_id), name: value}

    return build


def _non_utf8(email: str, delivery_id: str) -> tuple[bytes, dict[str, str]]:
    body = _body(email, name="J?rgen").replace(b"J?rgen", b"J\xfcrgen")
    return body, signed_bytes(body, delivery_id=delivery_id)


def _non_utf8_unsigned(email: str, delivery_id: str) -> tuple[bytes, dict[str, str]]:
    # Signed as text with the bad byte replaced: not the bytes that were sent.
    body = _body(email, name="J?rgen").replace(b"J?rgen", b"J\xfcrgen")
    return body, signed(body.decode(errors="replace").encode(), delivery_id=delivery_id)


def _signed_as_is(
    make: Callable[[str], bytes],
) -> Callable[[str, str], tuple[bytes, dict[str, str]]]:
    def build(email: str, delivery_id: str) -> tuple[bytes, dict[str, str]]:
        body = make(email)
        return body, signed_bytes(body, delivery_id=delivery_id)

    return build


def _chunked_over_limit(
    email: str, delivery_id: str
) -> tuple[Callable[[], AsyncIterator[bytes]], dict[str, str]]:
    body = _body(email, name="x" * 300_000)

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65_536):
            yield body[start : start + 65_536]

    return stream, signed(body, delivery_id=delivery_id)


REFUSALS = {
    "tampered-body": Refusal(_tampered, 401, "invalid-signature", "No matching signature"),
    "stale-timestamp": Refusal(_stale, 401, "invalid-signature", "too old"),
    "future-timestamp": Refusal(_future, 401, "invalid-signature", "too new"),
    "no-webhook-id": Refusal(_missing("webhook-id"), 401, "invalid-signature", "webhook-id"),
    "no-webhook-timestamp": Refusal(
        _missing("webhook-timestamp"), 401, "invalid-signature", "webhook-timestamp"
    ),
    "no-webhook-signature": Refusal(
        _missing("webhook-signature"), 401, "invalid-signature", "webhook-signature"
    ),
    "no-webhook-source": Refusal(
        _missing("webhook-source"), 401, "invalid-signature", "webhook-source"
    ),
    "unknown-source": Refusal(
        _header("webhook-source", "mallory"), 401, "invalid-signature", "mallory"
    ),
    "wrong-secret": Refusal(
        _secret(OTHER_SECRET), 401, "invalid-signature", "No matching signature"
    ),
    "retired-secret": Refusal(
        _secret(RETIRED_SECRET), 401, "invalid-signature", "No matching signature"
    ),
    "garbled-signature": Refusal(
        _header("webhook-signature", "v1,!!!"), 401, "invalid-signature", "Signature rejected"
    ),
    "signature-of-another-webhook-id": Refusal(
        _renamed, 401, "invalid-signature", "No matching signature"
    ),
    "non-utf8-body-signed-as-text": Refusal(
        _non_utf8_unsigned, 401, "invalid-signature", "No matching signature"
    ),
    "non-utf8-body": Refusal(_non_utf8, 422, "validation-error", "body"),
    "string-of-200kb": Refusal(
        _signed_as_is(lambda email: _body(email, name="A" * 200_000)),
        422,
        "validation-error",
        "body.name",
    ),
    "10000-open-brackets": Refusal(
        _signed_as_is(lambda email: b"[" * 10_000), 422, "validation-error", "body"
    ),
    "10000-nested-arrays": Refusal(
        _signed_as_is(lambda email: b"[" * 10_000 + b"]" * 10_000),
        422,
        "validation-error",
        "body",
    ),
    "10000-levels-inside-a-lead": Refusal(
        _signed_as_is(
            lambda email: _body(email, technologies="@").replace(
                b'"@"', b"[" * 10_000 + b"]" * 10_000
            )
        ),
        422,
        "validation-error",
        "body",
    ),
    "nul-character": Refusal(
        _signed_as_is(lambda email: _body(email, name="Ada\u0000Lovelace")),
        422,
        "validation-error",
        "body.name",
    ),
    "over-the-size-limit": Refusal(
        _signed_as_is(lambda email: _body(email, name="x" * 300_000)),
        413,
        "payload-too-large",
        "262144",
    ),
    "over-the-size-limit-chunked": Refusal(_chunked_over_limit, 413, "payload-too-large", "262144"),
    "text-plain": Refusal(
        _header("content-type", "text/plain"), 415, "unsupported-media-type", "text/plain"
    ),
    "form-urlencoded": Refusal(
        _header("content-type", "application/x-www-form-urlencoded"),
        415,
        "unsupported-media-type",
        "x-www-form-urlencoded",
    ),
    "json-in-latin-1": Refusal(
        _header("content-type", "application/json; charset=iso-8859-1"),
        415,
        "unsupported-media-type",
        "iso-8859-1",
    ),
}


async def traces(db: AsyncEngine, email: str, delivery_id: str) -> dict[str, int]:
    """What the scorer holds that a delivery of `email` under `delivery_id` would have
    written: the lead and its scores, the lead.created it stages in its outbox, and the
    delivery's idempotency record."""
    async with db.connect() as conn:
        counts = await conn.execute(
            sa.text(
                """
                SELECT
                  (SELECT count(*) FROM scorer.leads WHERE email = :email),
                  (SELECT count(*) FROM scorer.lead_scores s JOIN scorer.leads l
                     ON l.id = s.lead_id WHERE l.email = :email),
                  (SELECT count(*) FROM scorer.outbox WHERE position(:marker IN value) > 0),
                  (SELECT count(*) FROM scorer.outbox
                     WHERE topic = :created AND position(:marker IN value) > 0),
                  (SELECT count(*) FROM scorer.idempotency_keys WHERE key LIKE :key)
                """
            ),
            {
                "email": email,
                "marker": email.encode(),
                "created": LEAD_CREATED.name,
                "key": f"%:{delivery_id}",
            },
        )
        leads, scores, outbox, created, keys = counts.one()
    return {
        "leads": leads,
        "lead_scores": scores,
        "outbox": outbox,
        "outbox_lead_created": created,
        "idempotency_keys": keys,
    }


async def intake_rows(db: AsyncEngine, email: str, delivery_id: str) -> dict[str, int]:
    """The rows an intake writes in its own transaction (leaving out what scoring adds)."""
    rows = await traces(db, email, delivery_id)
    return {k: rows[k] for k in ("leads", "outbox_lead_created", "idempotency_keys")}


NOTHING = {
    "leads": 0,
    "lead_scores": 0,
    "outbox": 0,
    "outbox_lead_created": 0,
    "idempotency_keys": 0,
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
async def test_a_refused_delivery_gets_its_4xx_and_stores_and_publishes_nothing(
    system: System, plain: httpx.AsyncClient, db: AsyncEngine, case: Refusal
) -> None:
    """Each delivery is refused with a problem+json naming what is wrong, leaves no row in
    the scorer's tables, and publishes nothing: the same person sent right after, properly
    signed and even under the refused webhook-id, is a new lead whose lead.created is the
    first one for them."""
    email = f"refused.{uuid.uuid4().hex[:12]}@nordwerk.de"
    delivery_id = f"msg_{uuid.uuid4().hex}"
    content, headers = case.build(email, delivery_id)
    answer = await plain.post(
        f"{system.scorer}/v1/leads",
        content=content() if callable(content) else content,
        headers=headers,
    )

    assert answer.status_code == case.status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["type"].endswith(f"/{case.problem}")
    named = problem["errors"][0]["field"] if "errors" in problem else problem["detail"]
    assert case.names in named, problem
    assert await traces(db, email, delivery_id) == NOTHING

    control = json.dumps(lead(email, campaign="control")).encode()
    accepted = await plain.post(
        f"{system.scorer}/v1/leads",
        content=control,
        headers=signed(control, delivery_id=delivery_id),
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "accepted"
    lead_id = accepted.json()["lead_id"]
    # One key, one partition: a lead.created of the refused delivery would come first.
    created = await read_topic(
        system.bootstrap, LEAD_CREATED.name, until=1, where=lambda r: r.key == lead_id.encode()
    )
    assert [decode(r.value).data.lead.campaign for r in created] == ["control"]


async def test_a_replayed_delivery_gets_the_first_answer_and_makes_no_second_lead(
    system: System, plain: httpx.AsyncClient, db: AsyncEngine
) -> None:
    """A delivery replayed as captured (within the timestamp tolerance), and the sender's
    own retry re-signed with a new timestamp, both get the first answer again marked as
    replayed, and the scorer still holds one lead, one lead.created and one delivery record;
    the same webhook-id with another body gets 409 and changes nothing either."""
    email = f"replayed.{uuid.uuid4().hex[:12]}@nordwerk.de"
    body = json.dumps(lead(email, campaign="first")).encode()
    headers = signed(body)
    delivery_id = headers["webhook-id"]
    first = await plain.post(f"{system.scorer}/v1/leads", content=body, headers=headers)
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "accepted"
    assert "idempotent-replayed" not in first.headers
    lead_id = first.json()["lead_id"]
    # Scoring adds a score and a lead.scored in the background; the intake's own rows are:
    once = {"leads": 1, "outbox_lead_created": 1, "idempotency_keys": 1}
    assert await intake_rows(db, email, delivery_id) == once

    retried = signed(body, delivery_id=delivery_id, at=datetime.now(UTC) + timedelta(seconds=2))
    assert retried["webhook-signature"] != headers["webhook-signature"]
    for replay in (headers, retried):
        again = await plain.post(f"{system.scorer}/v1/leads", content=body, headers=replay)
        assert (again.status_code, again.json()) == (first.status_code, first.json())
        assert again.headers["idempotent-replayed"] == "true"
    reused = json.dumps(lead(email, campaign="reused")).encode()
    refused = await plain.post(
        f"{system.scorer}/v1/leads",
        content=reused,
        headers=signed(reused, delivery_id=delivery_id),
    )
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("/idempotency-key-reused")
    assert await intake_rows(db, email, delivery_id) == once

    # A later delivery for the same person: one key, one partition, so the lead.created
    # topic shows every announcement of this lead in order, and nothing between the two.
    later = json.dumps(lead(email, campaign="later")).encode()
    updated = await plain.post(f"{system.scorer}/v1/leads", content=later, headers=signed(later))
    assert (updated.json()["lead_id"], updated.json()["status"]) == (lead_id, "updated")
    created = await read_topic(
        system.bootstrap, LEAD_CREATED.name, until=2, where=lambda r: r.key == lead_id.encode()
    )
    assert [decode(r.value).data.lead.campaign for r in created] == ["first", "later"]


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
