"""What a test runs against: a real PostgreSQL and a real Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from handoff_runtime.db import async_url
from handoff_runtime.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from handoff_runtime.migrations import upgrade

T = TypeVar("T")


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


def _in_own_thread(work: Callable[[], T]) -> T:
    """Run blocking work that may start its own event loop (Alembic's env does), from sync or
    async code alike."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(work).result()


async def _on_server(url: str, statement: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
    engine = create_async_engine(async_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


@contextmanager
def service_database(server_url: str, service: str, *, revision: str = "head") -> Iterator[str]:
    """A fresh database on the server at `server_url` with `service`'s migrations applied up to
    `revision`; its URL is yielded, and the database dropped afterwards."""
    name = f"{service}_{uuid.uuid4().hex[:12]}"
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    _in_own_thread(lambda: asyncio.run(_on_server(server_url, f'CREATE DATABASE "{name}"')))
    try:
        _in_own_thread(lambda: upgrade(service, url, revision))
        yield url
    finally:
        _in_own_thread(
            lambda: asyncio.run(_on_server(server_url, f'DROP DATABASE "{name}" WITH (FORCE)'))
        )
