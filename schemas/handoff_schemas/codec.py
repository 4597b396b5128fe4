"""Turning events into Kafka record values and back, validating against the catalogue."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from .catalogue import EVENTS_BY_TYPE, event_type_of
from .envelope import CloudEvent, RawCloudEvent


class InvalidEvent(ValueError):
    """A record that is not a valid catalogued event: it belongs in the dead-letter topic."""


def new_event(
    data: BaseModel, *, source: str, subject: str, traceparent: str | None = None
) -> CloudEvent[Any]:
    """Wrap a payload in an envelope of its catalogued type; `subject` is the lead id."""
    return CloudEvent[Any](
        type=event_type_of(type(data)).type,
        source=source,
        subject=subject,
        data=data,
        traceparent=traceparent,
    )


def encode(event: CloudEvent[Any]) -> bytes:
    """The structured-mode JSON bytes of an event."""
    return event.model_dump_json(exclude_none=False).encode()


def decode(value: bytes | None) -> CloudEvent[Any]:
    """Parse and validate a record value; raises InvalidEvent naming what is wrong."""
    if value is None:
        raise InvalidEvent("record has no value")
    try:
        raw = RawCloudEvent.model_validate_json(value)
    except ValidationError as exc:
        raise InvalidEvent(f"not a CloudEvents envelope: {_first_error(exc)}") from exc
    entry = EVENTS_BY_TYPE.get(raw.type)
    if entry is None:
        raise InvalidEvent(f"unknown event type {raw.type!r}")
    try:
        data = entry.model.model_validate(raw.data)
    except ValidationError as exc:
        raise InvalidEvent(f"invalid {raw.type} data: {_first_error(exc)}") from exc
    lead_id = getattr(data, "lead_id", None)
    if lead_id is not None and lead_id != raw.subject:
        raise InvalidEvent(f"subject {raw.subject!r} is not the lead id {lead_id!r}")
    return CloudEvent[Any](**{**raw.model_dump(exclude={"data"}), "data": data})


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(root)"
    return f"{where}: {err['msg']}"
