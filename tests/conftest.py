"""Fixtures shared by integration and end-to-end tests: one real embedded PostgreSQL and one
real Kafka-protocol broker (Tansu) per test session, on a temporary directory and a free
port, so no test depends on anything already running on the machine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.infra import Infra, embedded_infra


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """Start a temporary PostgreSQL and a fresh broker for the whole session."""
    with embedded_infra("handoff-test-") as started:
        yield started
