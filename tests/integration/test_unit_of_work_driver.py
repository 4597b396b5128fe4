"""The runtime's statements on the transaction's asyncpg connection (`UnitOfWork.driver`):
they belong to the unit of work's transaction even when they are its first statements,
staged rows written through it read back as SQLAlchemy would have written them, and the
statement count the batch tests use sees them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from support.infra import Infra

from handoff_runtime.db import Database
from handoff_runtime.statements import statements_sent

pytestmark = pytest.mark.integration


class Undone(Exception):
    """Raised to roll a unit of work back."""


@pytest.fixture
async def probe(infra: Infra) -> AsyncIterator[tuple[Database, sa.Table]]:
    """A database handle and a table of its own, dropped afterwards."""
    db = Database(infra.database_url, schema="public", source="/tests", pool_size=2)
    table = sa.Table(
        f"driver_probe_{uuid.uuid4().hex[:12]}",
        sa.MetaData(schema="public"),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("doc", JSONB, nullable=True),
        sa.Column("nullable_doc", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=True),
    )
    async with db.engine.begin() as conn:
        await conn.run_sync(table.metadata.create_all)
    try:
        yield db, table
    finally:
        async with db.engine.begin() as conn:
            await conn.run_sync(table.metadata.drop_all)
        await db.dispose()


async def _ids(db: Database, table: sa.Table) -> list[int]:
    async with db.unit_of_work() as uow:
        return list((await uow.session.scalars(sa.select(table.c.id).order_by("id"))).all())


async def test_a_first_statement_on_the_driver_is_inside_the_transaction(
    probe: tuple[Database, sa.Table],
) -> None:
    db, table = probe
    insert = f'INSERT INTO public."{table.name}" (id) VALUES ($1)'
    in_transaction: list[bool] = []

    async def insert_then_fail() -> None:
        async with db.unit_of_work() as uow:
            driver = await uow.driver()
            await driver.execute(insert, 1)
            in_transaction.append(driver.is_in_transaction())
            raise Undone

    with pytest.raises(Undone):
        await insert_then_fail()
    assert in_transaction == [True]
    assert await _ids(db, table) == []  # rolled back with the unit of work

    async with db.unit_of_work() as uow:
        await (await uow.driver()).execute(insert, 2)
        # The session's own statements see it: one transaction, one connection.
        assert await uow.session.scalar(sa.select(sa.func.count()).select_from(table)) == 1
    assert await _ids(db, table) == [2]


async def test_staged_rows_are_written_as_sqlalchemy_would_write_them(
    probe: tuple[Database, sa.Table],
) -> None:
    db, table = probe
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    rows: list[dict[str, Any]] = [
        {"id": 1, "doc": {"a": [1, 2.5, "x"], "b": None}, "nullable_doc": {"k": 1}, "at": at},
        {"id": 2, "doc": None, "nullable_doc": None, "at": None},
        {"id": 3, "doc": ["list", {"nested": True}], "nullable_doc": [], "at": at},
    ]
    async with db.unit_of_work() as uow:
        for row in rows:
            uow.append(table, row)
        # A read in the same transaction writes what was staged first.
        await uow.write_staged()
        assert await uow.session.scalar(sa.select(sa.func.count()).select_from(table)) == 3

    async with db.unit_of_work() as uow:
        read = (await uow.session.execute(sa.select(table).order_by(table.c.id))).all()
        stored = (
            await uow.session.execute(
                sa.text(
                    f'SELECT id, doc IS NULL, nullable_doc IS NULL FROM public."{table.name}"'
                    " ORDER BY id"
                )
            )
        ).all()
    assert [dict(r._mapping) for r in read] == rows
    # None is JSON null in a plain JSON column, SQL NULL where the column says so.
    assert [tuple(r) for r in stored] == [(1, False, False), (2, False, True), (3, False, False)]


async def test_the_statement_count_sees_the_session_and_the_driver_alike(
    probe: tuple[Database, sa.Table],
) -> None:
    """What the tests that hold a batch to a fixed number of statements count with."""
    db, table = probe
    select = f'SELECT id FROM public."{table.name}"'
    with statements_sent(db) as sent:
        async with db.unit_of_work() as uow:
            await uow.session.execute(sa.select(table.c.id))
            for n in (7, 8, 9):
                uow.append(table, {"id": n, "doc": None})
            await uow.write_staged()  # one executemany on the driver, for three rows
            await (await uow.driver()).fetch(select)
    assert [" ".join(text.split())[:6] for text in sent] == ["SELECT", "INSERT", "SELECT"]
    assert sent[2] == select
