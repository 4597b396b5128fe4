"""The CloudEvents 1.0 envelope every Handoff event travels in (structured JSON mode)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

DataT = TypeVar("DataT", bound=BaseModel)

CONTENT_TYPE = "application/cloudevents+json"


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (the only clock events use)."""
    return datetime.now(UTC)


def in_utc_range(value: datetime) -> datetime:
    """Refuse a time that cannot be expressed in UTC (0001-01-01 at +14:00 is in year 0),
    so that no comparison or subtraction later overflows."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None
    return value


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def written_as_text(value: object) -> object:
    """Refuse a number, or a string holding only a number, where a time is expected: pydantic
    would read it as seconds since 1970, so `to=0.5` or `"occurred_at": 1700000000` would pass
    as a time nobody meant. A time is RFC 3339 text (or a `datetime` built in code)."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("a time must be an ISO 8601 date-time such as 2026-11-20T14:05:00Z")
    return value


Instant = Annotated[AwareDatetime, BeforeValidator(written_as_text), AfterValidator(in_utc_range)]
"""A time with a time zone (offset) that is representable in UTC."""


class CloudEvent(BaseModel, Generic[DataT]):
    """A CloudEvents 1.0 envelope. `subject` is the lead id and also the Kafka key."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1)
    source: str = Field(min_length=1, description="URI-reference of the producing service.")
    type: str = Field(
        min_length=1,
        description="Event type with its major version, e.g. handoff.lead.assigned.v1.",
    )
    subject: str = Field(min_length=1, description="The lead id; equal to the Kafka key.")
    time: datetime = Field(default_factory=utcnow)
    datacontenttype: Literal["application/json"] = "application/json"
    traceparent: str | None = Field(
        default=None,
        max_length=55,
        description="W3C trace context of the request or event that caused this one "
        "(CloudEvents distributed tracing extension): one lead's events share a trace id.",
    )
    data: DataT


class RawCloudEvent(CloudEvent[Any]):
    """An envelope as received, data not parsed yet (used to route by `type`).

    Unlike a new envelope, nothing is defaulted: a received event without an id or a time
    is invalid, since the id is what consumers deduplicate by."""

    id: str = Field(min_length=1)
    time: Instant
    data: dict[str, Any]
