"""Fixtures shared by integration and end-to-end tests: one real embedded PostgreSQL and one
real Kafka-protocol broker (Tansu) per test session, on a temporary directory and a free
port, so no test depends on anything already running on the machine."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.infra import Infra

from handoff_runtime.embedded import EmbeddedKafka, EmbeddedPostgres, free_port


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """Start a temporary PostgreSQL and a fresh broker for the whole session."""
    workdir = Path(tempfile.mkdtemp(prefix="handoff-test-"))
    postgres = EmbeddedPostgres(workdir / "pg", temporary=True)
    kafka = EmbeddedKafka(port=free_port(), log_path=workdir / "tansu.log")
    url = postgres.start()
    try:
        bootstrap = kafka.start()
        try:
            yield Infra(database_url=url, bootstrap=bootstrap, workdir=workdir)
        finally:
            kafka.stop()
    finally:
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)
