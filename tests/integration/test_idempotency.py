"""Idempotent deliveries on the real embedded PostgreSQL: a retried webhook gets the first
response, a reused key with another body is refused, and concurrent duplicates have one
effect."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from support.infra import Infra

from handoff_runtime.db import Database
from handoff_runtime.idempotency import (
    DeliveryInProgress,
    IdempotencyConflict,
    StoredResponse,
    body_hash,
    claim,
    delete_expired_keys,
    remember,
)
from handoff_runtime.tables import create_idempotency_table

pytestmark = pytest.mark.integration

BODY = b'{"email": "ada@acme.io"}'


@pytest.fixture
async def db(infra: Infra) -> AsyncIterator[Database]:
    """A throwaway service schema with the runtime tables."""
    service = f"idem{uuid.uuid4().hex[:8]}"
    db = Database(infra.database_url, schema=service, source=f"/handoff/{service}")
    async with db.engine.begin() as conn:
        await conn.execute(sa.text(f'CREATE SCHEMA "{service}"'))
        await conn.run_sync(db.tables.metadata.create_all)
    yield db
    async with db.engine.begin() as conn:
        await conn.execute(sa.text(f'DROP SCHEMA "{service}" CASCADE'))
    await db.dispose()


async def test_first_delivery_goes_ahead_and_a_retry_gets_the_stored_response(
    db: Database,
) -> None:
    async with db.unit_of_work() as uow:
        assert await claim(uow, "hubspot:msg_1", body_hash(BODY)) is None
        await remember(uow, "hubspot:msg_1", 202, {"lead_id": "L1", "status": "accepted"})

    async with db.unit_of_work() as uow:
        stored = await claim(uow, "hubspot:msg_1", body_hash(BODY))
    assert stored == StoredResponse(202, {"lead_id": "L1", "status": "accepted"})


async def test_the_same_key_with_another_body_is_a_conflict(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await claim(uow, "hubspot:msg_1", body_hash(BODY))
        await remember(uow, "hubspot:msg_1", 202, {"lead_id": "L1"})

    with pytest.raises(IdempotencyConflict) as error:
        async with db.unit_of_work() as uow:
            await claim(uow, "hubspot:msg_1", body_hash(BODY + b" "))
    assert error.value.status == 409
    assert error.value.type == "idempotency-key-reused"


async def test_a_claim_rolled_back_with_its_effect_leaves_the_key_free(db: Database) -> None:
    async def failing_delivery() -> None:
        async with db.unit_of_work() as uow:
            assert await claim(uow, "hubspot:msg_1", body_hash(BODY)) is None
            raise RuntimeError("the effect failed")

    with pytest.raises(RuntimeError):
        await failing_delivery()

    async with db.unit_of_work() as uow:
        assert await claim(uow, "hubspot:msg_1", body_hash(BODY)) is None


async def test_a_key_claimed_without_a_response_is_in_progress(db: Database) -> None:
    async with db.unit_of_work() as uow:
        assert await claim(uow, "hubspot:msg_1", body_hash(BODY)) is None
        with pytest.raises(DeliveryInProgress):
            await claim(uow, "hubspot:msg_1", body_hash(BODY))


async def test_concurrent_duplicates_have_exactly_one_effect(db: Database) -> None:
    effects: list[str] = []
    first_claimed = asyncio.Event()

    async def deliver(name: str, *, slow: bool) -> StoredResponse | None:
        async with db.unit_of_work() as uow:
            stored = await claim(uow, "hubspot:msg_1", body_hash(BODY))
            if slow:
                first_claimed.set()
            if stored is None:
                effects.append(name)
                if slow:
                    # The duplicate arrives while this transaction is still open.
                    await asyncio.sleep(0.5)
                await remember(uow, "hubspot:msg_1", 202, {"handled_by": name})
            return stored

    async def duplicate() -> StoredResponse | None:
        await first_claimed.wait()
        return await deliver("second", slow=False)

    first, second = await asyncio.gather(deliver("first", slow=True), duplicate())
    assert effects == ["first"]
    assert first is None
    assert second == StoredResponse(202, {"handled_by": "first"})


async def test_a_duplicate_waiting_on_a_failed_first_delivery_goes_ahead(db: Database) -> None:
    first_claimed = asyncio.Event()

    async def failing_first() -> None:
        async with db.unit_of_work() as uow:
            await claim(uow, "hubspot:msg_1", body_hash(BODY))
            first_claimed.set()
            await asyncio.sleep(0.3)
            raise RuntimeError("the effect failed")

    async def duplicate() -> StoredResponse | None:
        await first_claimed.wait()
        async with db.unit_of_work() as uow:
            stored = await claim(uow, "hubspot:msg_1", body_hash(BODY))
            await remember(uow, "hubspot:msg_1", 202, {"handled_by": "second"})
            return stored

    failed, second = await asyncio.gather(failing_first(), duplicate(), return_exceptions=True)
    assert isinstance(failed, RuntimeError)
    assert second is None


async def test_the_alembic_step_creates_a_table_claim_can_use(infra: Infra) -> None:
    service = f"idem{uuid.uuid4().hex[:8]}"
    db = Database(infra.database_url, schema=service, source=f"/handoff/{service}")

    def migrate(connection: sa.Connection) -> None:
        connection.execute(sa.text(f'CREATE SCHEMA "{service}"'))
        create_idempotency_table(Operations(MigrationContext.configure(connection)), service)

    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(migrate)
        async with db.unit_of_work() as uow:
            assert await claim(uow, "hubspot:msg_1", body_hash(BODY)) is None
            await remember(uow, "hubspot:msg_1", 202, {"lead_id": "L1"})
        async with db.unit_of_work() as uow:
            assert await claim(uow, "hubspot:msg_1", body_hash(BODY)) == StoredResponse(
                202, {"lead_id": "L1"}
            )
    finally:
        async with db.engine.begin() as conn:
            await conn.execute(sa.text(f'DROP SCHEMA "{service}" CASCADE'))
        await db.dispose()


async def test_retention_deletes_only_keys_older_than_the_window(db: Database) -> None:
    table = db.tables.idempotency_keys
    async with db.unit_of_work() as uow:
        for key in ("old", "recent"):
            await claim(uow, key, body_hash(BODY))
            await remember(uow, key, 202, {})
        await uow.session.execute(
            table.update()
            .where(table.c.key == "old")
            .values(created_at=sa.func.now() - timedelta(hours=73))
        )

    async with db.unit_of_work() as uow:
        deleted = await delete_expired_keys(uow, retention=timedelta(hours=72))
    assert deleted == 1

    async with db.engine.connect() as conn:
        keys = (await conn.execute(sa.select(table.c.key))).scalars().all()
    assert keys == ["recent"]
