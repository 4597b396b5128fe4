"""One trace id per lead journey step, in every log line and carried across Kafka.

An HTTP request continues the caller's W3C `traceparent` header, or starts a trace; the
trace id is bound to the logging context (`trace_id` in every JSON line), returned in the
response's `traceparent` header, and stamped on every event the request publishes (the
CloudEvents distributed-tracing extension attribute `traceparent`). A consumer binds the
trace id of the event it processes, so the events it publishes in turn carry it on: one
lead's intake, scoring, routing and status changes share a trace id across the services.
"""

from __future__ import annotations

import re
import secrets

import structlog

TRACEPARENT_HEADER = "traceparent"
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C traceparent, or None if it is absent or malformed."""
    match = _TRACEPARENT.match(traceparent or "")
    if match is None or match.group(1) == "0" * 32:
        return None
    return match.group(1)


def bind_trace(traceparent: str | None) -> str:
    """Bind the trace of `traceparent` (or a new one) to the logging context; its id."""
    trace_id = trace_id_of(traceparent) or secrets.token_hex(16)
    structlog.contextvars.bind_contextvars(trace_id=trace_id)
    return trace_id


def current_traceparent() -> str | None:
    """A traceparent continuing the current trace (a new span id), if one is bound."""
    return continuing(structlog.contextvars.get_contextvars().get("trace_id"))


def continuing(trace_id: str | None) -> str | None:
    """A traceparent continuing the trace `trace_id` (a new span id), if there is one."""
    if not trace_id:
        return None
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"
