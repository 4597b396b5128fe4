"""Prometheus metrics every service exposes at /metrics (one process, one registry)."""

from __future__ import annotations

import time

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .tracing import TRACEPARENT_HEADER, bind_trace, current_traceparent

log = structlog.get_logger(__name__)

# `_created` series double the exposition for no use in dashboards or alerts.
disable_created_metrics()

EVENTS_CONSUMED = Counter(
    "handoff_events_consumed_total",
    "Records consumed, by topic and outcome (processed, duplicate, ignored, dead_lettered).",
    ["service", "topic", "outcome"],
)
EVENTS_PRODUCED = Counter(
    "handoff_events_produced_total",
    "Outbox records sent to the broker, by topic and outcome (published, failed).",
    ["service", "topic", "outcome"],
)
EVENT_PROCESSING = Histogram(
    "handoff_event_processing_seconds",
    "Time to process one consumed record, retries included.",
    ["service", "topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_PROCESSING = Histogram(
    "handoff_batch_processing_seconds",
    "Time to process one consumed batch in one transaction, commit included.",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
GROUP_COMMIT_ITEMS = Histogram(
    "handoff_group_commit_items",
    "Items written together in one transaction by a group commit (the scorer's "
    "`new-people`: new people's first lead deliveries), by group.",
    ["service", "group"],
    buckets=(1, 2, 5, 10, 20, 50, 100),
)
OUTBOX_BACKLOG = Gauge(
    "handoff_outbox_backlog",
    "Outbox rows committed but not yet acknowledged by the broker.",
    ["service"],
)
OUTBOX_OLDEST_AGE = Gauge(
    "handoff_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox row (0 when none).",
    ["service"],
)
DEAD_LETTERED = Counter(
    "handoff_dlq_messages_total",
    "Messages sent to the dead-letter topic after bounded retries, by original topic.",
    ["service", "topic"],
)
REDRIVES = Counter(
    "handoff_outbox_redrives_total",
    "Times the outbox was re-published because the broker had lost its log.",
    ["service"],
)
BROKER_RECOVERIES = Counter(
    "handoff_broker_recoveries_total",
    "Times a running process found the broker had lost its log and re-joined its consumer "
    "groups from the start of the new one.",
    ["service"],
)
INTAKE_REQUESTS = Counter(
    "handoff_intake_requests_total",
    "Webhook deliveries (leads, status reports) by source and outcome: accepted, updated, "
    "applied, late, duplicate, pending, replayed; or refused: invalid, unauthorized, "
    "too_large, conflict, not_found.",
    ["service", "source", "outcome"],
)
CONSUMER_LAG = Gauge(
    "handoff_consumer_lag",
    "Records in the partition after the last one the consumer fetched (set per batch).",
    ["service", "group", "topic", "partition"],
)
HTTP_REQUESTS = Counter(
    "handoff_http_requests_total",
    "HTTP requests by route template, method and status code.",
    ["service", "method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "handoff_http_request_duration_seconds",
    "HTTP request duration by route template and method.",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


def metrics_response() -> Response:
    """The Prometheus text exposition of this process's metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class HttpMetrics:
    """ASGI middleware: trace, count and time requests by route template, never by raw path
    (bounded labels); count webhook deliveries by source and outcome.

    Plain ASGI rather than Starlette's BaseHTTPMiddleware, which runs every request in a
    task group of its own with memory streams in between: on the intake path that cost more
    CPU than the request itself."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        self.traceparent_header = TRACEPARENT_HEADER.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        state = scope.setdefault("state", {})  # request.state lives here: routes fill it in
        structlog.contextvars.clear_contextvars()
        bind_trace(
            next(
                (v.decode("latin-1") for k, v in scope["headers"] if k == self.traceparent_header),
                None,
            )
        )

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if traceparent := current_traceparent():
                    headers = [
                        *message.get("headers", ()),
                        (self.traceparent_header, traceparent.encode()),
                    ]
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            route = _route_template(scope)
            method = scope["method"]
            HTTP_REQUESTS.labels(self.service, method, route, str(status)).inc()
            HTTP_DURATION.labels(self.service, method, route).observe(time.perf_counter() - started)
            source = state.get("intake_source")
            if source is not None:
                outcome = state.get("intake_outcome") or _refusal(status)
                INTAKE_REQUESTS.labels(self.service, source, outcome).inc()
                log.info("delivery answered", source=source, outcome=outcome, status=status)


def _refusal(status: int) -> str:
    """The intake outcome of an answer the route did not name (an error)."""
    return {401: "unauthorized", 404: "not_found", 409: "conflict", 413: "too_large"}.get(
        status, "invalid" if 400 <= status < 500 else "error"
    )


def _route_template(scope: Scope) -> str:
    """The matched route's path template (set by the router while handling the request)."""
    route = scope.get("route")
    return str(getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched")
