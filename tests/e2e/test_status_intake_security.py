"""The CRM's signed status reports to feedback, attacked: a delivery that is not the CRM's
own, unchanged and fresh, or whose body feedback cannot read, is refused with its 4xx
problem+json and leaves no status, history, pending report, outbox or delivery row, so the
lead's lifecycle is exactly what it was. A properly signed report right after each refusal
is applied, under the refused delivery's own webhook-id: proof that the refusal held nothing
back and that the checks would have seen a write."""

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
from e2e.conftest import CRM_SECRET, CRM_SOURCE
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook
from support.infra import Infra
from support.system import System
from support.waiting import wait_for

from handoff_runtime.db import create_engine

pytestmark = pytest.mark.e2e

OTHER_SECRET = "whsec_" + "c29tZS1vdGhlci1zZW5kZXJzLXNlY3JldC1rZXk="
"""A secret the CRM source does not list."""

Build = Callable[[str, str], tuple[bytes, dict[str, str]]]
"""(actor, webhook-id) -> (body, headers) of one delivery."""


def report(actor: str, **fields: Any) -> bytes:
    """A status report; `actor` marks it, so any row it left behind can be found."""
    return json.dumps({"status": "accepted", "actor": actor, **fields}).encode()


def crm_signed(
    body: bytes, delivery_id: str, *, secret: str = CRM_SECRET, at: datetime | None = None
) -> dict[str, str]:
    """Headers the official Standard Webhooks client attaches for the CRM."""
    at = at or datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-source": CRM_SOURCE,
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(delivery_id, at, body.decode()),
    }


def crm_signed_bytes(body: bytes, delivery_id: str) -> dict[str, str]:
    """Headers for `body` signed over its bytes, as the spec defines the signature (a body
    that is not text cannot go through the library's `sign`)."""
    at = int(datetime.now(UTC).timestamp())
    key = base64.b64decode(CRM_SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{delivery_id}.{at}.".encode() + body, hashlib.sha256).digest()
    return {
        "content-type": "application/json",
        "webhook-source": CRM_SOURCE,
        "webhook-id": delivery_id,
        "webhook-timestamp": str(at),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def _tampered(actor: str, delivery_id: str) -> tuple[bytes, dict[str, str]]:
    signed_body = report(actor)
    return signed_body.replace(b'"accepted"', b'"won"'), crm_signed(signed_body, delivery_id)


def _wrong_secret(actor: str, delivery_id: str) -> tuple[bytes, dict[str, str]]:
    body = report(actor)
    return body, crm_signed(body, delivery_id, secret=OTHER_SECRET)


def _at(shift: timedelta) -> Build:
    def build(actor: str, delivery_id: str) -> tuple[bytes, dict[str, str]]:
        body = report(actor)
        return body, crm_signed(body, delivery_id, at=datetime.now(UTC) + shift)

    return build


def _missing(header: str) -> Build:
    def build(actor: str, delivery_id: str) -> tuple[bytes, dict[str, str]]:
        body = report(actor)
        headers = crm_signed(body, delivery_id)
        return body, {k: v for k, v in headers.items() if k != header}

    return build


def _as_is(make: Callable[[str], bytes], **extra_headers: str) -> Build:
    def build(actor: str, delivery_id: str) -> tuple[bytes, dict[str, str]]:
        body = make(actor)
        return body, {**crm_signed_bytes(body, delivery_id), **extra_headers}

    return build


def _non_utf8(actor: str) -> bytes:
    # Latin-1, as a misconfigured CRM export might send it.
    return report(actor, note="Gespr?ch").replace(b"Gespr?ch", b"Gespr\xe4ch")


def _non_utf8_signed_as_text(actor: str, delivery_id: str) -> tuple[bytes, dict[str, str]]:
    # Signed as text with the bad byte replaced: not the bytes that were sent.
    body = _non_utf8(actor)
    return body, crm_signed(body.decode(errors="replace").encode(), delivery_id)


def _nested_in_note(actor: str) -> bytes:
    return report(actor, note="@").replace(b'"@"', b"[" * 10_000 + b"]" * 10_000)


@dataclass(frozen=True)
class Refusal:
    """A status report feedback must refuse: its status, problem type, and a text the
    answer names (in `detail`, or as the field of the first validation error)."""

    build: Build
    status: int
    problem: str
    names: str


REFUSALS = {
    "tampered-body": Refusal(_tampered, 401, "invalid-signature", "No matching signature"),
    "wrong-secret": Refusal(_wrong_secret, 401, "invalid-signature", "No matching signature"),
    "stale-timestamp": Refusal(_at(timedelta(minutes=-6)), 401, "invalid-signature", "too old"),
    "future-timestamp": Refusal(_at(timedelta(minutes=6)), 401, "invalid-signature", "too new"),
    "no-webhook-signature": Refusal(
        _missing("webhook-signature"), 401, "invalid-signature", "webhook-signature"
    ),
    "no-webhook-source": Refusal(
        _missing("webhook-source"), 401, "invalid-signature", "webhook-source"
    ),
    "non-utf8-body-signed-as-text": Refusal(
        _non_utf8_signed_as_text, 401, "invalid-signature", "No matching signature"
    ),
    "non-utf8-body": Refusal(_as_is(_non_utf8), 422, "validation-error", "body"),
    "10000-open-brackets": Refusal(
        _as_is(lambda actor: b"[" * 10_000), 422, "validation-error", "body"
    ),
    "10000-levels-inside-a-report": Refusal(
        _as_is(_nested_in_note), 422, "validation-error", "body"
    ),
    "string-of-200kb": Refusal(
        _as_is(lambda actor: report(actor, note="n" * 200_000)),
        422,
        "validation-error",
        "body.note",
    ),
    "over-the-size-limit": Refusal(
        _as_is(lambda actor: report(actor, note="n" * 300_000)),
        413,
        "payload-too-large",
        "262144",
    ),
    "text-plain": Refusal(
        _as_is(report, **{"content-type": "text/plain"}),
        415,
        "unsupported-media-type",
        "text/plain",
    ),
}


@pytest.fixture(scope="module")
async def db(infra: Infra) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(infra.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def lead_id(system: System) -> str:
    """A lead feedback follows (status reports for a lead it has not seen are 404s, which
    would prove nothing about what a report can write)."""
    async with httpx.AsyncClient(timeout=30, headers={"webhook-source": "local"}) as http:
        answer = await http.post(
            f"{system.scorer}/v1/leads",
            json={
                "email": f"crm.target.{uuid.uuid4().hex[:10]}@nordwerk.de",
                "name": "Katrin Vogel",
                "company": "Nordwerk Software",
                "title": "VP Engineering",
                "industry": "Software",
                "employees": 250,
                "country": "DE",
                "activities": [
                    {"type": "demo_requested", "occurred_at": datetime.now(UTC).isoformat()}
                ],
            },
        )
        assert answer.status_code == 202, answer.text
        lead_id: str = answer.json()["lead_id"]

        async def followed() -> bool:
            seen = await http.get(f"{system.feedback}/v1/leads/{lead_id}/history")
            return seen.status_code == 200

        assert await wait_for(followed, timeout_s=30), "feedback never saw the lead"
    return lead_id


async def rows(db: AsyncEngine, lead_id: str, actor: str, delivery_id: str) -> dict[str, int]:
    """What feedback holds that a report by `actor` under `delivery_id` would have written:
    a history entry or a report waiting for the assignment, the events it announces, and the
    delivery's idempotency record."""
    async with db.connect() as conn:
        counts = await conn.execute(
            sa.text(
                """
                SELECT
                  (SELECT count(*) FROM feedback.history
                     WHERE lead_id = :lead AND (actor = :actor OR delivery_id LIKE :key)),
                  (SELECT count(*) FROM feedback.pending_statuses
                     WHERE lead_id = :lead
                       AND (change->>'actor' = :actor OR delivery_id LIKE :key)),
                  (SELECT count(*) FROM feedback.outbox WHERE position(:marker IN value) > 0),
                  (SELECT count(*) FROM feedback.idempotency_keys WHERE key LIKE :key)
                """
            ),
            {"lead": lead_id, "actor": actor, "marker": actor.encode(), "key": f"%:{delivery_id}"},
        )
        history, pending, outbox, keys = counts.one()
    return {"history": history, "pending": pending, "outbox": outbox, "idempotency_keys": keys}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
async def test_a_refused_status_report_gets_its_4xx_and_changes_nothing(
    system: System, db: AsyncEngine, lead_id: str, case: Refusal
) -> None:
    actor = f"rep-{uuid.uuid4().hex[:12]}"
    delivery_id = f"msg_{uuid.uuid4().hex}"
    url = f"{system.feedback}/v1/leads/{lead_id}/status"
    content, headers = case.build(actor, delivery_id)
    async with httpx.AsyncClient(timeout=30) as plain:
        answer = await plain.post(url, content=content, headers=headers)

        assert answer.status_code == case.status, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["type"].endswith(f"/{case.problem}")
        named = problem["errors"][0]["field"] if "errors" in problem else problem["detail"]
        assert case.names in named, problem
        assert await rows(db, lead_id, actor, delivery_id) == {
            "history": 0,
            "pending": 0,
            "outbox": 0,
            "idempotency_keys": 0,
        }
        after = (await plain.get(f"{system.feedback}/v1/leads/{lead_id}/history")).json()
        assert [h for h in after["history"] if h["actor"] == actor] == []
        assert [p for p in after["pending"] if p["change"]["actor"] == actor] == []

        # The CRM's real report, under the refused delivery's webhook-id: had the refusal
        # been remembered, this would be answered 409 or as a replay.
        control = report(actor)
        applied = await plain.post(url, content=control, headers=crm_signed(control, delivery_id))
    assert applied.status_code in (200, 202), applied.text
    assert "idempotent-replayed" not in applied.headers
    written = await rows(db, lead_id, actor, delivery_id)
    assert written["history"] + written["pending"] == 1
    assert written["idempotency_keys"] == 1
