"""Signed webhook intake: body size limit, Standard Webhooks signature check, JSON parsing.

A sender names itself in the `webhook-source` request header (`hubspot`, `salesforce`, ...);
the service looks that name up in its `webhook_sources` setting
(`HANDOFF_<SERVICE>_WEBHOOK_SOURCES`, JSON) to find the secrets the delivery must be signed
with. A missing or unknown source is refused with 401 like a bad signature, so an
unauthenticated caller learns nothing about which sources exist.

Signed deliveries follow the Standard Webhooks spec (https://www.standardwebhooks.com/):
`webhook-id`, `webhook-timestamp` (Unix seconds, within 5 minutes of now) and
`webhook-signature` (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, several separated by
spaces). Verification is done by the official `standardwebhooks` library, over the body's
bytes as sent. A source may list several secrets so a secret can be rotated without downtime:
any one verifying is enough. A source configured with `"signed": false` (local use only) needs
no signature headers.

A delivery must be JSON (`content-type: application/json`, or a `+json` type, in UTF-8; a
delivery naming no type is taken as JSON, as FastAPI takes it); another type gets 415 once
the sender is authenticated.

A route takes the verified delivery as a dependency and parses the body itself:

    @router.post("/v1/leads")
    async def intake(delivery: Annotated[Delivery, Depends(signed_delivery)]) -> ...:
        lead = parse_body(LeadCreate, delivery.body)
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from math import floor
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from standardwebhooks import Webhook, WebhookVerificationError
from standardwebhooks.webhooks import hmac_data

from .problems import DomainError

if TYPE_CHECKING:
    from .settings import ServiceSettings

SOURCE_HEADER = "webhook-source"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
IDEMPOTENCY_KEY_HEADER = "idempotency-key"
SIGNATURE_HEADERS = (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)

SECRET_PREFIX = "whsec_"
MAX_JSON_DEPTH = 32
# Keys end up in a btree primary key, whose entries are limited to ~2.7 kB.
MAX_DELIVERY_ID_LENGTH = 255

_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")

M = TypeVar("M", bound=BaseModel)


class WebhookSource(BaseModel):
    """One sender of webhooks and the secrets its deliveries are signed with."""

    # Errors must not echo the secrets into logs.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    secrets: list[str] = Field(
        default_factory=list,
        repr=False,
        description="Standard Webhooks secrets (`whsec_<base64>`); several while rotating.",
    )
    signed: bool = Field(
        default=True, description="False accepts unsigned deliveries (local use only)."
    )

    @field_validator("secrets")
    @classmethod
    def _secrets_are_standard_webhooks_secrets(cls, secrets: list[str]) -> list[str]:
        for position, secret in enumerate(secrets, start=1):
            if not secret.startswith(SECRET_PREFIX):
                raise ValueError(f"secret {position} does not start with {SECRET_PREFIX!r}")
            encoded = secret.removeprefix(SECRET_PREFIX)
            # The library itself decodes leniently (it drops characters that are not base64),
            # which would silently turn a mistyped secret into a different key.
            try:
                if not _BASE64.fullmatch(encoded):
                    raise binascii.Error
                key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
            except binascii.Error:
                raise ValueError(
                    f"secret {position} is not valid base64 after {SECRET_PREFIX!r}"
                ) from None
            if not key:
                raise ValueError(f"secret {position} is empty")
        return secrets

    @model_validator(mode="after")
    def _signed_source_has_a_secret(self) -> WebhookSource:
        if self.signed and not self.secrets:
            raise ValueError('a signed source needs at least one secret (or "signed": false)')
        return self


class InvalidSignature(DomainError):
    """The delivery's sender could not be authenticated."""

    status = 401
    type = "invalid-signature"
    title = "Invalid webhook signature"


class PayloadTooLarge(DomainError):
    """The request body is larger than the service accepts."""

    status = 413
    type = "payload-too-large"
    title = "Payload too large"


class UnsupportedMediaType(DomainError):
    """The request body is declared as something other than JSON in UTF-8."""

    status = 415
    type = "unsupported-media-type"
    title = "Unsupported media type"


@dataclass(frozen=True)
class Delivery:
    """A webhook delivery whose sender has been authenticated (or whose source is unsigned)."""

    source: str
    delivery_id: str | None
    idempotency_key: str | None
    body: bytes
    request_state: Any = field(default=None, compare=False, repr=False)
    """The request's state, where the answer's outcome is noted for the intake metrics."""

    def note_outcome(self, outcome: str) -> None:
        """Record what the delivery came to (accepted, replayed, ...) for the metrics."""
        if self.request_state is not None:
            self.request_state.intake_outcome = outcome

    @property
    def key(self) -> str | None:
        """The idempotency key of this delivery, namespaced by source: the `webhook-id`
        (covered by the signature) if present, else the `Idempotency-Key` header."""
        own_key = self.delivery_id or self.idempotency_key
        return f"{self.source}:{own_key}" if own_key else None


async def signed_delivery(request: Request) -> Delivery:
    """Route dependency: read the body (at most `max_body_bytes`) and authenticate it.

    Raises PayloadTooLarge (413) as soon as the declared or streamed size passes the limit,
    InvalidSignature (401) when the source is missing or unknown or the signature does not
    verify, UnsupportedMediaType (415) for a body declared as anything but JSON, and a 422 for
    a delivery or idempotency id too long to store.
    """
    settings: ServiceSettings = request.app.state.runtime.settings
    # Counted by source in the intake metrics; an unknown name is not a label value.
    named = request.headers.get(SOURCE_HEADER)
    request.state.intake_source = named if named in settings.webhook_sources else "unknown"
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    # isascii: str.isdigit() also accepts digits such as "²" that int() refuses.
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"The body is {declared} bytes; at most {limit} are accepted.", max_body_bytes=limit
        )

    source_name = request.headers.get(SOURCE_HEADER)
    if not source_name:
        raise InvalidSignature(f"The {SOURCE_HEADER} header is missing.")
    source = settings.webhook_sources.get(source_name)
    if source is None:
        raise InvalidSignature(f"Unknown webhook source {source_name[:64]!r}.")
    if source.signed:
        missing = [name for name in SIGNATURE_HEADERS if not request.headers.get(name)]
        if missing:
            raise InvalidSignature(f"Missing signature header(s): {', '.join(missing)}.")

    body = await _read_body(request, limit)
    if source.signed:
        _verify(source, body, {name: request.headers[name] for name in SIGNATURE_HEADERS})
    # Checked once the sender is authenticated, so that an unauthenticated caller gets 401
    # whatever it sends. A delivery that names no type is taken as JSON, as FastAPI takes it.
    content_type = request.headers.get("content-type", "").strip()
    if content_type and not is_json_media_type(content_type):
        raise UnsupportedMediaType(
            f"The body is declared as {content_type[:100]!r}; send application/json (UTF-8).",
            accepted="application/json",
        )

    delivery_id = request.headers.get(ID_HEADER) or None
    idempotency_key = request.headers.get(IDEMPOTENCY_KEY_HEADER) or None
    _check_id_length(ID_HEADER, delivery_id)
    _check_id_length("Idempotency-Key", idempotency_key)
    return Delivery(
        source=source_name,
        delivery_id=delivery_id,
        idempotency_key=idempotency_key,
        body=body,
        request_state=request.state,
    )


async def _read_body(request: Request, limit: int) -> bytes:
    # Counting while streaming also stops a chunked body, which declares no length.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is larger than {limit} bytes.", max_body_bytes=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def is_json_media_type(content_type: str) -> bool:
    """Whether a `content-type` header declares JSON this service can read:
    `application/json` or `application/<anything>+json`, with no charset or a UTF-8 one (JSON
    is UTF-8; a body declared in another charset would be misread)."""
    parsed = Message()
    parsed["content-type"] = content_type
    if parsed.get_content_maintype() != "application":
        return False
    subtype = parsed.get_content_subtype()
    if subtype != "json" and not subtype.endswith("+json"):
        return False
    charset = parsed.get_param("charset")
    return charset is None or (isinstance(charset, str) and charset.lower() in {"utf-8", "utf8"})


class _BytesWebhook(Webhook):
    """The library's verification (headers, timestamp tolerance, signature list, constant-time
    comparison) applied to the body's bytes exactly as sent.

    Standard Webhooks signs the raw body, but the Python library signs a `str` and encodes it
    as strict UTF-8, so a body that is not UTF-8 could never verify and its sender would be
    told its signature is wrong. The body is handed over decoded with `surrogateescape`,
    and signing encodes it back the same way: the very bytes that were sent (for a UTF-8 body
    the same bytes as the library's own encoding)."""

    def sign(self, msg_id: str, timestamp: datetime, data: str) -> str:
        """The library's `v1` signature of `msg_id.timestamp.data`, over the bytes sent."""
        timestamp_str = str(floor(timestamp.replace(tzinfo=UTC).timestamp()))
        to_sign = f"{msg_id}.{timestamp_str}.{data}".encode("utf-8", "surrogateescape")
        signature = hmac_data(self._whsecret, to_sign)
        return f"v1,{base64.b64encode(signature).decode('utf-8')}"


def _verify(source: WebhookSource, body: bytes, headers: dict[str, str]) -> None:
    # Decoded once for every secret; a body that is not UTF-8 still verifies when its sender
    # signed it (and is then refused with 422 naming the body, by parse_body).
    text = body.decode("utf-8", "surrogateescape")
    rejection = "No matching signature found"
    for secret in source.secrets:
        try:
            # json_parse=False: the library would otherwise json.loads the body, which
            # raises (or recurses without bound) on bodies parse_body is there to refuse.
            _BytesWebhook(secret).verify(text, headers, json_parse=False)
            return
        except WebhookVerificationError as exc:
            # Timestamp errors are the same for every secret; only "no match" varies.
            rejection = str(exc)
        except ValueError:
            # A signature list entry without exactly one comma, or a signature that is not
            # base64 (binascii.Error): the library does not turn these into its own error.
            raise InvalidSignature(
                f"The {SIGNATURE_HEADER} header is malformed; expected "
                "space-separated 'v1,<base64>' entries."
            ) from None
    raise InvalidSignature(f"Signature rejected: {rejection}.")


def _check_id_length(header: str, value: str | None) -> None:
    if value is not None and len(value) > MAX_DELIVERY_ID_LENGTH:
        raise RequestValidationError(
            [
                {
                    "type": "string_too_long",
                    "loc": ("header", header),
                    "msg": f"String should have at most {MAX_DELIVERY_ID_LENGTH} characters",
                    "input": None,
                    "ctx": {"max_length": MAX_DELIVERY_ID_LENGTH},
                }
            ]
        )


def parse_body(model: type[M], body: bytes) -> M:
    """Parse a JSON body into `model`, failing like FastAPI's own body validation.

    Raises RequestValidationError (rendered as the usual 422 problem+json) with locations
    starting at "body": a body that is not UTF-8 or not JSON names "body", JSON nested deeper
    than MAX_JSON_DEPTH names "body", a string holding the NUL character (U+0000) names
    "body.<its path>", a field the model rejects names "body.<field path>".
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestValidationError(
            [_body_error("json_invalid", ("body", exc.start), "Body is not UTF-8")]
        ) from None
    try:
        # orjson is iterative and caps nesting itself (at 1024), so no RecursionError.
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if "depth" in exc.msg or "recursion" in exc.msg:
            raise _too_deep() from None
        raise RequestValidationError(
            [_body_error("json_invalid", ("body", exc.pos), "JSON decode error", exc.msg)]
        ) from None
    if _nesting_depth_exceeds(value, MAX_JSON_DEPTH):
        raise _too_deep()
    # PostgreSQL text and jsonb cannot hold U+0000: such a string would fail at the insert,
    # after validation, as a 500. Refused wherever it is, since any string may be stored.
    if (nul := _first_nul_string(value)) is not None:
        raise RequestValidationError([_nul_error(("body", *nul))])
    try:
        # Python-mode validation of the decoded JSON, as FastAPI validates a body model.
        return model.model_validate(value)
    except ValidationError as exc:
        raise RequestValidationError(
            [
                {**err, "loc": ("body", *err["loc"])}
                for err in exc.errors(include_url=False, include_input=False)
            ]
        ) from None


def _body_error(
    type_: str, loc: tuple[str | int, ...], msg: str, error: str | None = None
) -> dict[str, Any]:
    return {"type": type_, "loc": loc, "msg": msg, "input": {}, "ctx": {"error": error or msg}}


def _too_deep() -> RequestValidationError:
    return RequestValidationError(
        [
            _body_error(
                "json_too_deep", ("body",), f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
            )
        ]
    )


def _nesting_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` nests objects/arrays more than `limit` deep (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _nul_error(loc: tuple[str | int, ...]) -> dict[str, Any]:
    return {
        "type": "string_nul_character",
        "loc": loc,
        "msg": "String should not contain the NUL character (U+0000)",
        "input": {},
    }


async def refuse_nul_characters(request: Request) -> None:
    """An app-wide dependency: refuse U+0000 in a path or query parameter, or anywhere in a
    JSON body FastAPI parses, as a 422 naming where it is. PostgreSQL text and jsonb cannot
    hold it, so it would otherwise fail at the insert or the query, as a 500. Raw-body routes
    (signed webhooks) are left to `parse_body`, which checks after the signature."""
    errors = [
        _nul_error((where, key.replace("\x00", "\\u0000")))
        for where, items in (
            ("path", list(request.path_params.items())),
            ("query", request.query_params.multi_items()),
        )
        for key, value in items
        if "\x00" in key or "\x00" in str(value)
    ]
    if getattr(request.scope.get("route"), "body_field", None) is not None:
        body = await request.body()  # cached: FastAPI parses the same bytes
        if b"\\u0000" in body:
            try:
                value = orjson.loads(body)
            except orjson.JSONDecodeError:
                value = None  # FastAPI's own validation reports the malformed body
            if (nul := _first_nul_string(value)) is not None:
                errors.append(_nul_error(("body", *nul)))
    if errors:
        raise RequestValidationError(errors)


def _first_nul_string(value: Any) -> tuple[str | int, ...] | None:
    """The path of a string (a value, or a key) holding U+0000, or None. The path of a key
    ends in the key itself, its NUL written as `\\u0000`. Walked without recursion."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return path
        elif isinstance(node, dict):
            for key in node:
                if "\x00" in key:
                    return (*path, key.replace("\x00", "\\u0000"))
            stack.extend((child, (*path, key)) for key, child in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend(
                (child, (*path, index)) for index, child in reversed(list(enumerate(node)))
            )
    return None
