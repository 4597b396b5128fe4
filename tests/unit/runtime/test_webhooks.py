"""Signed webhook intake: what a sender sees when its signature, body or size is wrong.

Signatures are made with the official `standardwebhooks` library, the way a sender such as
Svix or any Standard Webhooks implementation makes them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError
from standardwebhooks import Webhook

from handoff_runtime.problems import PROBLEM_JSON, TYPE_BASE, install_problem_handlers
from handoff_runtime.settings import ServiceSettings
from handoff_runtime.webhooks import (
    Delivery,
    WebhookSource,
    _BytesWebhook,
    _first_nul_string,
    is_json_media_type,
    parse_body,
    signed_delivery,
)

OLD_SECRET = "whsec_" + base64.b64encode(b"old secret of twenty-four").decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"new secret, rotated in, 32 bytes").decode()
WRONG_SECRET = "whsec_" + base64.b64encode(b"somebody else's secret key").decode()
MAX_BODY = 262144


class LeadIn(BaseModel):
    """A small intake model with the kind of limits the real ones have."""

    email: str = Field(max_length=254)
    name: str | None = Field(default=None, max_length=200)
    attributes: dict[str, Any] = Field(default_factory=dict)


def make_app(sources: dict[str, WebhookSource]) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    settings = ServiceSettings(webhook_sources=sources, max_body_bytes=MAX_BODY)
    app.state.runtime = SimpleNamespace(settings=settings)

    @app.post("/v1/leads")
    async def intake(delivery: Annotated[Delivery, Depends(signed_delivery)]) -> dict[str, Any]:
        lead = parse_body(LeadIn, delivery.body)
        return {"source": delivery.source, "key": delivery.key, "email": lead.email}

    return app


SOURCES = {
    "hubspot": WebhookSource(secrets=[NEW_SECRET]),
    "demo": WebhookSource(signed=False),
}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(SOURCES))
    async with httpx.AsyncClient(transport=transport, base_url="http://handoff") as http:
        yield http


def lead_body(**fields: Any) -> bytes:
    return json.dumps({"email": "ada@acme.io", **fields}).encode()


def signed(
    body: bytes,
    *,
    secret: str = NEW_SECRET,
    at: datetime | None = None,
    msg_id: str = "msg_2Xk9",
    source: str = "hubspot",
) -> dict[str, str]:
    """The headers a Standard Webhooks sender attaches to `body`."""
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, at, body.decode("utf-8", errors="replace"))
    return {
        "webhook-source": source,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def assert_problem(response: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem: dict[str, Any] = response.json()
    assert problem["type"] == TYPE_BASE + type_
    assert problem["status"] == status
    return problem


async def test_a_signature_made_by_the_standard_library_verifies(
    client: httpx.AsyncClient,
) -> None:
    body = lead_body()
    response = await client.post("/v1/leads", content=body, headers=signed(body))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "source": "hubspot",
        "key": "hubspot:msg_2Xk9",
        "email": "ada@acme.io",
    }


async def test_one_of_several_signatures_matching_is_enough(client: httpx.AsyncClient) -> None:
    body = lead_body()
    headers = signed(body)
    other = signed(body, secret=WRONG_SECRET)["webhook-signature"]
    headers["webhook-signature"] = f"{other} {headers['webhook-signature']}"
    response = await client.post("/v1/leads", content=body, headers=headers)
    assert response.status_code == 200, response.text


async def test_one_changed_body_byte_is_rejected(client: httpx.AsyncClient) -> None:
    body = lead_body()
    headers = signed(body)
    tampered = body.replace(b"ada@", b"adb@")
    assert sum(a != b for a, b in zip(body, tampered, strict=True)) == 1
    response = await client.post("/v1/leads", content=tampered, headers=headers)
    problem = assert_problem(response, 401, "invalid-signature")
    assert "No matching signature" in problem["detail"]


async def test_a_tampered_signature_is_rejected(client: httpx.AsyncClient) -> None:
    body = lead_body()
    headers = signed(body)
    version, signature = headers["webhook-signature"].split(",")
    flipped = ("B" if signature[5] == "A" else "A").join((signature[:5], signature[6:]))
    headers["webhook-signature"] = f"{version},{flipped}"
    response = await client.post("/v1/leads", content=body, headers=headers)
    assert_problem(response, 401, "invalid-signature")


@pytest.mark.parametrize(
    ("shift", "reason"),
    [(timedelta(minutes=-6), "too old"), (timedelta(minutes=6), "too new")],
    ids=["stale", "future"],
)
async def test_a_timestamp_more_than_five_minutes_off_is_rejected(
    client: httpx.AsyncClient, shift: timedelta, reason: str
) -> None:
    body = lead_body()
    headers = signed(body, at=datetime.now(UTC) + shift)
    response = await client.post("/v1/leads", content=body, headers=headers)
    problem = assert_problem(response, 401, "invalid-signature")
    assert reason in problem["detail"]


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
async def test_a_missing_signature_header_is_rejected(
    client: httpx.AsyncClient, missing: str
) -> None:
    body = lead_body()
    headers = signed(body)
    del headers[missing]
    response = await client.post("/v1/leads", content=body, headers=headers)
    problem = assert_problem(response, 401, "invalid-signature")
    assert missing in problem["detail"]


async def test_a_delivery_naming_no_source_is_rejected(client: httpx.AsyncClient) -> None:
    body = lead_body()
    headers = signed(body)
    del headers["webhook-source"]
    response = await client.post("/v1/leads", content=body, headers=headers)
    problem = assert_problem(response, 401, "invalid-signature")
    assert "webhook-source" in problem["detail"]


async def test_an_unknown_source_is_rejected(client: httpx.AsyncClient) -> None:
    body = lead_body()
    response = await client.post("/v1/leads", content=body, headers=signed(body, source="marketo"))
    problem = assert_problem(response, 401, "invalid-signature")
    assert "Unknown webhook source 'marketo'" in problem["detail"]


async def test_a_signature_made_with_another_secret_is_rejected(
    client: httpx.AsyncClient,
) -> None:
    body = lead_body()
    response = await client.post(
        "/v1/leads", content=body, headers=signed(body, secret=WRONG_SECRET)
    )
    assert_problem(response, 401, "invalid-signature")


@pytest.mark.parametrize(
    "signature",
    ["garbage", "v1,!!!", "v1,abc", "v1,a,b", "v1,abcd  v1,abcd", ""],
    ids=["no-comma", "not-base64", "bad-padding", "two-commas", "double-space", "empty"],
)
async def test_a_malformed_signature_header_is_a_401_not_a_500(
    client: httpx.AsyncClient, signature: str
) -> None:
    body = lead_body()
    headers = {**signed(body), "webhook-signature": signature}
    response = await client.post("/v1/leads", content=body, headers=headers)
    assert_problem(response, 401, "invalid-signature")


@pytest.mark.parametrize("timestamp", ["yesterday", "nan", "1e400", "-1"])
async def test_a_malformed_timestamp_is_a_401(client: httpx.AsyncClient, timestamp: str) -> None:
    body = lead_body()
    headers = {**signed(body), "webhook-timestamp": timestamp}
    response = await client.post("/v1/leads", content=body, headers=headers)
    assert_problem(response, 401, "invalid-signature")


async def test_during_rotation_both_old_and_new_secrets_verify() -> None:
    rotating = {"hubspot": WebhookSource(secrets=[OLD_SECRET, NEW_SECRET])}
    transport = httpx.ASGITransport(app=make_app(rotating))
    async with httpx.AsyncClient(transport=transport, base_url="http://handoff") as http:
        for secret in (OLD_SECRET, NEW_SECRET):
            body = lead_body()
            response = await http.post(
                "/v1/leads", content=body, headers=signed(body, secret=secret)
            )
            assert response.status_code == 200, response.text


async def test_after_rotation_the_old_secret_no_longer_verifies(
    client: httpx.AsyncClient,
) -> None:
    body = lead_body()
    response = await client.post("/v1/leads", content=body, headers=signed(body, secret=OLD_SECRET))
    assert_problem(response, 401, "invalid-signature")


async def test_a_secret_verifies_until_it_is_removed_from_the_rotation() -> None:
    """The rotation a sender goes through: only the old secret, then both (the sender still
    signs with the old one), then only the new one: the old signature stops verifying."""
    body = lead_body()
    answers = []
    for secrets in ([OLD_SECRET], [NEW_SECRET, OLD_SECRET], [NEW_SECRET]):
        app = make_app({"hubspot": WebhookSource(secrets=secrets)})
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://handoff") as http:
            response = await http.post(
                "/v1/leads", content=body, headers=signed(body, secret=OLD_SECRET)
            )
            answers.append(response.status_code)
    assert answers == [200, 200, 401]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON; charset=UTF-8",
        "application/cloudevents+json",
    ],
)
def test_json_media_types_are_accepted(content_type: str) -> None:
    assert is_json_media_type(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/jsonx",
        "application/json; charset=latin-1",
        "json",
    ],
)
def test_other_media_types_are_not_json(content_type: str) -> None:
    assert not is_json_media_type(content_type)


async def test_a_signed_body_declared_as_another_type_is_a_415(
    client: httpx.AsyncClient,
) -> None:
    body = lead_body()
    headers = {**signed(body), "content-type": "text/plain"}
    response = await client.post("/v1/leads", content=body, headers=headers)
    problem = assert_problem(response, 415, "unsupported-media-type")
    assert "text/plain" in problem["detail"]


async def test_an_unauthenticated_body_of_another_type_is_still_a_401(
    client: httpx.AsyncClient,
) -> None:
    body = lead_body()
    headers = {**signed(body, secret=WRONG_SECRET), "content-type": "text/plain"}
    response = await client.post("/v1/leads", content=body, headers=headers)
    assert_problem(response, 401, "invalid-signature")


async def test_an_unsigned_form_post_is_a_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/leads", data={"email": "ada@acme.io"}, headers={"webhook-source": "demo"}
    )
    assert_problem(response, 415, "unsupported-media-type")


async def test_an_unsigned_source_needs_no_signature_headers(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/leads",
        content=lead_body(),
        headers={"webhook-source": "demo", "Idempotency-Key": "form-42"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["key"] == "demo:form-42"


async def test_a_delivery_without_any_id_has_no_idempotency_key(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/leads", content=lead_body(), headers={"webhook-source": "demo"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["key"] is None


def test_the_webhook_id_wins_over_the_idempotency_key() -> None:
    delivery = Delivery(source="hubspot", delivery_id="msg_1", idempotency_key="k", body=b"")
    assert delivery.key == "hubspot:msg_1"


async def test_an_overlong_idempotency_key_is_a_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/leads",
        content=lead_body(),
        headers={"webhook-source": "demo", "Idempotency-Key": "k" * 5000},
    )
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0]["field"] == "header.Idempotency-Key"


async def test_a_body_declared_too_large_is_refused_before_it_is_read(
    client: httpx.AsyncClient,
) -> None:
    chunks_sent = 0

    async def large_body() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(16):
            chunks_sent += 1
            yield b"x" * 65536

    headers = {**signed(b"{}"), "content-length": str(16 * 65536)}
    response = await client.post("/v1/leads", content=large_body(), headers=headers)
    problem = assert_problem(response, 413, "payload-too-large")
    assert problem["max_body_bytes"] == MAX_BODY
    assert chunks_sent == 0


async def test_an_oversized_body_sent_in_one_piece_is_refused_with_413(
    client: httpx.AsyncClient,
) -> None:
    body = lead_body(name="x" * MAX_BODY)
    response = await client.post("/v1/leads", content=body, headers=signed(body))
    assert_problem(response, 413, "payload-too-large")


async def test_a_chunked_body_is_cut_off_at_the_limit(client: httpx.AsyncClient) -> None:
    chunk = b"x" * 65536
    chunks_sent = 0

    async def endless_body() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(1000):  # 64 MiB, far past the limit
            chunks_sent += 1
            yield chunk

    request = client.build_request(
        "POST", "/v1/leads", content=endless_body(), headers=signed(b"{}")
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    response = await client.send(request)
    assert_problem(response, 413, "payload-too-large")
    # Reading stopped at the first chunk past the limit.
    assert chunks_sent == MAX_BODY // len(chunk) + 1


async def test_a_body_at_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    start = lead_body(attributes={"padding": ""})
    body = start.replace(b'""', b'"' + b"p" * (MAX_BODY - len(start)) + b'"')
    assert len(body) == MAX_BODY
    response = await client.post("/v1/leads", content=body, headers=signed(body))
    assert response.status_code == 200, response.text


def signed_bytes(
    body: bytes, *, secret: str = NEW_SECRET, msg_id: str = "msg_2Xk9"
) -> dict[str, str]:
    """Standard Webhooks headers for `body` signed over its bytes, as the spec defines the
    signature (and as senders whose bodies need not be text compute it)."""
    at = int(datetime.now(UTC).timestamp())
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{at}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-source": "hubspot",
        "webhook-id": msg_id,
        "webhook-timestamp": str(at),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        "content-type": "application/json",
    }


async def test_a_signed_non_utf8_body_is_a_422_naming_the_body_not_a_401(
    client: httpx.AsyncClient,
) -> None:
    body = b'{"email": "\xff\xfe@acme.io"}'
    response = await client.post("/v1/leads", content=body, headers=signed_bytes(body))
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0]["field"] == "body"
    assert "UTF-8" in problem["errors"][0]["reason"]


async def test_a_non_utf8_body_whose_signature_does_not_match_is_a_401(
    client: httpx.AsyncClient,
) -> None:
    body = b'{"email": "\xff\xfe@acme.io"}'
    headers = signed_bytes(body.replace(b"\xfe", b"\xfd"))
    response = await client.post("/v1/leads", content=body, headers=headers)
    problem = assert_problem(response, 401, "invalid-signature")
    assert "No matching signature" in problem["detail"]


@given(st.text(), st.text(alphabet=st.characters(codec="ascii"), min_size=1))
def test_signing_the_sent_bytes_agrees_with_the_library_for_every_text_body(
    text: str, msg_id: str
) -> None:
    at = datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC)
    assert _BytesWebhook(NEW_SECRET).sign(msg_id, at, text) == Webhook(NEW_SECRET).sign(
        msg_id, at, text
    )


async def test_a_non_utf8_body_from_an_unsigned_source_is_a_422(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/leads", content=b'{"email": "\xff@acme.io"}', headers={"webhook-source": "demo"}
    )
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0]["field"] == "body"
    assert "UTF-8" in problem["errors"][0]["reason"]


async def test_malformed_json_names_the_body_like_fastapi_does(
    client: httpx.AsyncClient,
) -> None:
    body = b'{"email": "ada@acme.io",'
    response = await client.post("/v1/leads", content=body, headers=signed(body))
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"] == [
        {"field": "body", "reason": "JSON decode error (at position 24)", "type": "json_invalid"}
    ]


async def test_a_wrong_field_is_named_by_its_path_in_the_body(client: httpx.AsyncClient) -> None:
    body = json.dumps({"name": "Ada", "attributes": []}).encode()
    response = await client.post("/v1/leads", content=body, headers=signed(body))
    problem = assert_problem(response, 422, "validation-error")
    assert {(e["field"], e["type"]) for e in problem["errors"]} == {
        ("body.email", "missing"),
        ("body.attributes", "dict_type"),
    }


async def test_a_huge_string_field_is_refused_by_the_models_own_limit(
    client: httpx.AsyncClient,
) -> None:
    body = lead_body(name="A" * 200_000)
    response = await client.post("/v1/leads", content=body, headers=signed(body))
    problem = assert_problem(response, 422, "validation-error")
    assert [(e["field"], e["type"]) for e in problem["errors"]] == [
        ("body.name", "string_too_long")
    ]


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


async def test_json_nested_10000_deep_is_a_422_not_a_500(client: httpx.AsyncClient) -> None:
    body = b"[" * 10_000 + b"]" * 10_000
    response = await client.post("/v1/leads", content=body, headers=signed(body))
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0]["field"] == "body"
    assert problem["errors"][0]["type"] == "json_too_deep"


async def test_json_nesting_is_allowed_up_to_32_levels(client: httpx.AsyncClient) -> None:
    # The object itself is level 1 and "attributes" level 2.
    allowed = lead_body(attributes={"x": nested(30)})
    response = await client.post("/v1/leads", content=allowed, headers=signed(allowed))
    assert response.status_code == 200, response.text

    too_deep = lead_body(attributes={"x": nested(31)})
    response = await client.post("/v1/leads", content=too_deep, headers=signed(too_deep))
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0] == {
        "field": "body",
        "reason": "JSON nested deeper than 32 levels",
        "type": "json_too_deep",
    }


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"name": "Ada\x00"}, ("name",)),
        ({"attributes": {"tags": ["ok", "n\x00l"]}}, ("attributes", "tags", 1)),
        ({"attributes": {"k\x00": 1}}, ("attributes", "k\\u0000")),
        ([{"a": "x"}, {"b": "\x00"}], (1, "b")),
        ("\x00", ()),
        ({"name": "Ada", "tags": ["\\u0000 written out"], "n": 0}, None),
    ],
)
def test_the_nul_character_is_found_wherever_it_is(
    value: Any, path: tuple[str | int, ...] | None
) -> None:
    assert _first_nul_string(value) == path


async def test_a_nul_character_is_a_422_naming_the_field_not_a_database_error(
    client: httpx.AsyncClient,
) -> None:
    body = lead_body(name="Ada\u0000Lovelace", attributes={"x": ["fine", "also\u0000"]})
    assert b"\\u0000" in body
    response = await client.post("/v1/leads", content=body, headers=signed(body))
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"] == [
        {
            "field": "body.name",
            "reason": "String should not contain the NUL character (U+0000)",
            "type": "string_nul_character",
        }
    ]


@pytest.mark.parametrize(
    ("source", "complaint"),
    [
        ({"secrets": []}, "at least one secret"),
        ({}, "at least one secret"),
        ({"secrets": ["c2VjcmV0"]}, "does not start with 'whsec_'"),
        ({"secrets": [NEW_SECRET, "whsec_not base64!"]}, "secret 2 is not valid base64"),
        ({"secrets": ["whsec_abcde"]}, "not valid base64"),
        ({"secrets": ["whsec_"]}, "not valid base64"),
    ],
)
def test_a_misconfigured_source_is_a_settings_error_naming_it(
    source: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValidationError) as error:
        ServiceSettings(webhook_sources={"hubspot": source})
    message = str(error.value)
    assert "webhook_sources.hubspot" in message
    assert complaint in message
    assert "whsec_not" not in message  # secrets are not echoed into logs


def test_sources_are_read_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "HANDOFF_WEBHOOK_SOURCES",
        json.dumps({"hubspot": {"secrets": [OLD_SECRET, NEW_SECRET]}, "demo": {"signed": False}}),
    )
    settings = ServiceSettings()
    assert settings.webhook_sources == {
        "hubspot": WebhookSource(secrets=[OLD_SECRET, NEW_SECRET]),
        "demo": WebhookSource(signed=False),
    }
    assert NEW_SECRET not in repr(settings)


def test_unpadded_secrets_are_accepted_like_the_library_accepts_them() -> None:
    unpadded = NEW_SECRET.rstrip("=")
    assert unpadded != NEW_SECRET
    WebhookSource(secrets=[unpadded])
