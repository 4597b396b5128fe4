"""Trace context: which traceparent headers are continued, and what is passed on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from handoff_runtime.tracing import bind_trace, current_traceparent, trace_id_of

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(autouse=True)
def clean_context() -> Iterator[None]:
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE}-00f067aa0ba902b7-01", TRACE),
        (f"00-{TRACE}-00f067aa0ba902b7-00", TRACE),
        (None, None),
        ("", None),
        (f"01-{TRACE}-00f067aa0ba902b7-01", None),  # unknown version
        (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", None),  # W3C: lower-case hex only
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),  # the all-zero id is invalid
        (f"00-{TRACE}-00f067aa0ba902b7", None),
        (f"00-{TRACE[:-1]}-00f067aa0ba902b7-01", None),
        (f"00-{TRACE}-00f067aa0ba902b7-01 trailing", None),
    ],
)
def test_only_a_valid_w3c_traceparent_names_a_trace(
    header: str | None, expected: str | None
) -> None:
    assert trace_id_of(header) == expected


def test_a_valid_traceparent_is_continued_and_passed_on_with_a_new_span() -> None:
    assert current_traceparent() is None

    trace_id = bind_trace(f"00-{TRACE}-00f067aa0ba902b7-01")

    assert trace_id == TRACE
    assert structlog.contextvars.get_contextvars()["trace_id"] == TRACE
    first, second = current_traceparent(), current_traceparent()
    assert first is not None
    assert second is not None
    assert trace_id_of(first) == trace_id_of(second) == TRACE
    assert first.split("-")[2] != second.split("-")[2]  # each hop its own span id
    assert first.split("-")[2] != "00f067aa0ba902b7"


def test_without_a_usable_traceparent_a_new_trace_starts() -> None:
    started = {bind_trace(None), bind_trace("garbage"), bind_trace(f"00-{'0' * 32}-{'1' * 16}-01")}

    assert len(started) == 3
    assert all(trace_id_of(f"00-{t}-{'1' * 16}-01") == t for t in started)
