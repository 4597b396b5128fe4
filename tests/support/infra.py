"""What a test runs against: a real PostgreSQL and a real Kafka-protocol broker."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from handoff_runtime.embedded import EmbeddedKafka, EmbeddedPostgres, free_port


@dataclass(frozen=True)
class Infra:
    """Where a database and a broker are, and a scratch directory beside them."""

    database_url: str
    bootstrap: str
    workdir: Path


@contextmanager
def embedded_infra(prefix: str) -> Iterator[Infra]:
    """A temporary embedded PostgreSQL and a fresh broker (Tansu) on a free port, in a new
    scratch directory; all stopped and removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    postgres = EmbeddedPostgres(workdir / "pg", temporary=True)
    kafka = EmbeddedKafka(port=free_port(), log_path=workdir / "tansu.log")
    try:
        url = postgres.start()
        try:
            yield Infra(database_url=url, bootstrap=kafka.start(), workdir=workdir)
        finally:
            kafka.stop()
    finally:
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)
