"""The connection pool on the real embedded PostgreSQL: a pooled connection the server has
closed is discarded at checkout (no pre-ping round trips), so the next unit of work runs on
a fresh connection instead of failing."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from support.infra import Infra

from handoff_runtime.db import Database

pytestmark = pytest.mark.integration


async def test_a_connection_the_server_closed_is_replaced_at_checkout(infra: Infra) -> None:
    db = Database(infra.database_url, schema="public", source="/tests", pool_size=1)
    admin = Database(infra.database_url, schema="public", source="/tests", pool_size=1)
    try:
        async with db.unit_of_work() as uow:
            first = await uow.session.scalar(sa.text("SELECT pg_backend_pid()"))
        async with admin.unit_of_work() as uow:
            ended = await uow.session.scalar(
                sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first}
            )
        assert ended is True
        await asyncio.sleep(0.5)  # the client reads the server's goodbye

        async with db.unit_of_work() as uow:
            second = await uow.session.scalar(sa.text("SELECT pg_backend_pid()"))
            application = await uow.session.scalar(
                sa.text("SELECT application_name FROM pg_stat_activity WHERE pid = :pid"),
                {"pid": second},
            )
    finally:
        await db.dispose()
        await admin.dispose()
    assert second != first
    assert application == "handoff-public"
