"""Turning events into Kafka record values and back, validating against the catalogue."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, create_model

from .catalogue import EVENTS, EVENTS_BY_TYPE, EventType, event_type_of
from .envelope import CloudEvent, Instant, RawCloudEvent


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


def _received(entry: EventType) -> type[CloudEvent[Any]]:
    """The envelope of `entry`'s events as received: its type fixed, its data typed, and
    (as `RawCloudEvent`) nothing defaulted."""
    return create_model(
        f"Received{entry.model.__name__}",
        __base__=CloudEvent[entry.model],  # type: ignore[name-defined]
        type=(Literal[entry.type], ...),  # type: ignore[arg-type]
        id=(str, Field(min_length=1)),
        time=(Instant, ...),
    )


_RECEIVED: TypeAdapter[CloudEvent[Any]] = TypeAdapter(
    Annotated[  # type: ignore[arg-type]
        Union[tuple(_received(entry) for entry in EVENTS)],  # noqa: UP007
        Field(discriminator="type"),
    ]
)
"""Every catalogued event as received, told apart by `type`: one pass over the JSON."""


def decode(value: bytes | None) -> CloudEvent[Any]:
    """Parse and validate a record value; raises InvalidEvent naming what is wrong.

    A valid event is read in one pass (envelope and data together), as an instance of its
    type's own `CloudEvent` subclass (same fields, typed data); anything that pass refuses
    is read again step by step (envelope, type, data) to say what is wrong."""
    if value is None:
        raise InvalidEvent("record has no value")
    try:
        event = _RECEIVED.validate_json(value)
    except ValidationError:
        event = _decode_stepwise(value)
    lead_id = getattr(event.data, "lead_id", None)
    if lead_id is not None and lead_id != event.subject:
        raise InvalidEvent(f"subject {event.subject!r} is not the lead id {lead_id!r}")
    return event


def _decode_stepwise(value: bytes) -> CloudEvent[Any]:
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
    return CloudEvent[Any](**{**raw.model_dump(exclude={"data"}), "data": data})


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(root)"
    return f"{where}: {err['msg']}"
