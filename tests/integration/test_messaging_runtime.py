"""The reliable-messaging runtime on the real embedded PostgreSQL and broker: idempotent
consumption, crash recovery, dead-lettering, and the outbox relay's ordering guarantees."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from support.infra import Infra
from support.kafka import produce, read_topic

from handoff_runtime.consumer import Consumer, ConsumerLoop, ConsumerSettings
from handoff_runtime.db import Database, UnitOfWork
from handoff_runtime.kafka import ensure_topics, make_consumer, make_producer
from handoff_runtime.relay import OutboxRelay
from handoff_schemas import CloudEvent, LeadCreatedV1, LeadProfile, Topic, encode, new_event
from handoff_schemas.catalogue import dead_letter_topic

pytestmark = pytest.mark.integration


class Boom(RuntimeError):
    """What a handler raises for a lead it cannot process."""


@dataclass
class Rig:
    """A throwaway service: its own schema, topic, consumer group, relay and effects table."""

    infra: Infra
    db: Database
    service: str
    topic: str
    effects: sa.Table
    producer: AIOKafkaProducer
    relay: OutboxRelay

    def loop(self, *, group: str | None = None, max_attempts: int = 3) -> ConsumerLoop:
        consumer = Consumer(group=group or self.service)

        @consumer.handles(LeadCreatedV1)
        async def record_effect(uow: UnitOfWork, event: CloudEvent[Any]) -> None:
            if str(event.data.lead.email).startswith("poison"):
                raise Boom(f"cannot process {event.data.lead_id}")
            await uow.session.execute(
                self.effects.insert().values(event_id=event.id, lead_id=event.data.lead_id)
            )

        consumer.subscribe_to(self.topic)
        kafka = make_consumer(
            self.infra.bootstrap,
            group_id=f"{consumer.group}",
            client_id=self.service,
            fetch_max_wait_ms=50,
            max_records=100,
        )
        return ConsumerLoop(
            consumer,
            kafka,
            self.db,
            ConsumerSettings(
                service=self.service,
                max_records=100,
                max_attempts=max_attempts,
                retry_backoff_s=0.01,
                commit_timeout_s=5,
            ),
        )

    async def effect_count(self) -> int:
        async with self.db.engine.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(self.effects)) or 0)


def lead_event(email: str = "ada@acme.io") -> CloudEvent[Any]:
    lead_id = uuid.uuid4().hex
    data = LeadCreatedV1(
        lead_id=lead_id, received_at=datetime.now(UTC), lead=LeadProfile(email=email)
    )
    return new_event(data, source="/tests", subject=lead_id)


@pytest.fixture
async def rig(infra: Infra) -> AsyncIterator[Rig]:
    service = f"rt{uuid.uuid4().hex[:8]}"
    db = Database(infra.database_url, schema=service, source=f"/handoff/{service}")
    effects = sa.Table(
        "effects",
        db.tables.metadata,
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("lead_id", sa.Text, nullable=False),
    )
    async with db.engine.begin() as conn:
        await conn.execute(sa.text(f'CREATE SCHEMA "{service}"'))
        await conn.run_sync(db.tables.metadata.create_all)
    topic = f"test.{service}"
    await ensure_topics(
        infra.bootstrap,
        [Topic(topic, "test", 2, ("tests",), ("tests",)), dead_letter_topic(service)],
    )
    producer = make_producer(infra.bootstrap, client_id=service, timeout_s=10)
    await producer.start()
    relay = OutboxRelay(
        db,
        producer,
        service=service,
        batch_size=100,
        poll_interval_s=0.05,
        send_timeout_s=10,
        retention=timedelta(hours=1),
    )
    yield Rig(infra, db, service, topic, effects, producer, relay)
    await producer.stop()
    await db.dispose()


async def run_until(loop: ConsumerLoop, done: Callable[[], Any], timeout_s: float = 45) -> None:
    """Run a consumer loop until `done()` (awaitable) is true, then stop it."""
    await loop.kafka.start()
    task = asyncio.create_task(loop.run())
    try:
        async with asyncio.timeout(timeout_s):
            while not await done():
                assert not task.done(), task.exception()
                await asyncio.sleep(0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await loop.kafka.stop()


async def test_duplicate_delivery_has_no_second_effect(rig: Rig) -> None:
    first, second = lead_event(), lead_event()
    value = encode(first)
    await produce(
        rig.infra.bootstrap,
        rig.topic,
        [(b"k1", value), (b"k1", value), (b"k2", encode(second)), (b"k1", value)],
    )
    loop = rig.loop()

    async def all_seen() -> bool:
        async with rig.db.engine.connect() as conn:
            seen = await conn.scalar(
                sa.select(sa.func.count()).select_from(rig.db.tables.processed_events)
            )
        return (await rig.effect_count()) == 2 and seen == 2

    await run_until(loop, all_seen)
    async with rig.db.engine.connect() as conn:
        rows = (await conn.execute(sa.select(rig.effects.c.event_id))).scalars().all()
    assert sorted(rows) == sorted([first.id, second.id])


async def test_crash_between_db_commit_and_offset_commit_loses_and_doubles_nothing(
    rig: Rig,
) -> None:
    events = [lead_event() for _ in range(20)]
    await produce(rig.infra.bootstrap, rig.topic, [(e.subject.encode(), encode(e)) for e in events])

    crashed = rig.loop()

    async def never_commit(batches: Any) -> None:
        return None  # the process dies right after the DB commit, before the offset commit

    crashed._commit = never_commit  # type: ignore[method-assign]
    await run_until(crashed, lambda: _eq(rig.effect_count(), 20))

    restarted = rig.loop()  # same group: nothing committed, so everything is re-delivered
    duplicates_before = _duplicates(rig.service, rig.topic)
    await run_until(
        restarted, lambda: _true_when(_duplicates(rig.service, rig.topic) - duplicates_before >= 20)
    )
    assert await rig.effect_count() == 20


async def test_crash_before_db_commit_leaves_nothing_and_redelivery_applies_once(rig: Rig) -> None:
    events = [lead_event() for _ in range(10)]
    await produce(rig.infra.bootstrap, rig.topic, [(e.subject.encode(), encode(e)) for e in events])
    loop = rig.loop()
    real_process = loop.process_batch
    calls = 0

    async def die_mid_batch(records: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            async with rig.db.unit_of_work() as uow:
                await uow.session.execute(
                    rig.effects.insert().values(event_id="half-written", lead_id="x")
                )
                raise ConnectionResetError("database went away mid-batch")
        await real_process(records)

    loop.process_batch = die_mid_batch  # type: ignore[method-assign]
    await run_until(loop, lambda: _eq(rig.effect_count(), 10))
    assert calls >= 2
    async with rig.db.engine.connect() as conn:
        ids = set((await conn.execute(sa.select(rig.effects.c.event_id))).scalars())
    assert ids == {e.id for e in events}


async def test_poison_messages_are_dead_lettered_and_the_partition_keeps_flowing(rig: Rig) -> None:
    poison = lead_event(email="poison@acme.io")
    good = lead_event()
    key = b"same-lead"  # one key: all three land on one partition, in this order
    await produce(
        rig.infra.bootstrap,
        rig.topic,
        [(key, b"\xff not json"), (key, encode(poison)), (key, encode(good))],
    )
    loop = rig.loop(max_attempts=3)
    relay = asyncio.create_task(rig.relay.run())
    try:
        await run_until(loop, lambda: _eq(rig.effect_count(), 1))
        dlq = await read_topic(
            rig.infra.bootstrap, dead_letter_topic(rig.service).name, until=2, timeout_s=20
        )
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)

    assert len(dlq) == 2
    headers = [{k: v.decode() for k, v in r.headers} for r in dlq]
    values = [r.value for r in dlq]
    assert values == [b"\xff not json", encode(poison)]
    for h in headers:
        assert h["dlq_original_topic"] == rig.topic
        assert h["dlq_attempts"] == "3"
        assert h["dlq_consumer_group"] == rig.service
        assert int(h["dlq_original_offset"]) >= 0
    assert headers[0]["dlq_original_partition"] == headers[1]["dlq_original_partition"]
    assert "not a CloudEvents envelope" in headers[0]["dlq_error"]
    assert "Boom" in headers[1]["dlq_error"]
    assert poison.data.lead_id in headers[1]["dlq_error"]
    async with rig.db.engine.connect() as conn:
        applied = (await conn.execute(sa.select(rig.effects.c.lead_id))).scalars().all()
    assert applied == [good.data.lead_id]


async def test_relay_publishes_a_row_whose_transaction_commits_late(rig: Rig) -> None:
    out_topic = rig.topic
    late_session = rig.db.unit_of_work()
    late = await late_session.__aenter__()
    late_event = await late.publish(
        LeadCreatedV1(
            lead_id="late", received_at=datetime.now(UTC), lead=LeadProfile(email="l@a.io")
        ),
        topic=out_topic,
        subject="late",
    )
    # a newer row commits while the older one is still open
    async with rig.db.unit_of_work() as uow:
        early_event = await uow.publish(
            LeadCreatedV1(
                lead_id="early", received_at=datetime.now(UTC), lead=LeadProfile(email="e@a.io")
            ),
            topic=out_topic,
            subject="early",
        )
    assert await rig.relay.publish_pending() == 1
    await late_session.__aexit__(None, None, None)  # the old transaction commits now
    assert await rig.relay.publish_pending() == 1

    records = await read_topic(rig.infra.bootstrap, out_topic, until=2)
    published = {r.key: r for r in records}
    assert set(published) == {b"late", b"early"}
    assert dict(published[b"late"].headers)["ce_id"].decode() == late_event.id
    assert dict(published[b"early"].headers)["ce_id"].decode() == early_event.id
    async with rig.db.engine.connect() as conn:
        unpublished = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(rig.db.tables.outbox)
            .where(rig.db.tables.outbox.c.published_at.is_(None))
        )
    assert unpublished == 0


async def test_redrive_republishes_retained_rows_in_commit_order(rig: Rig) -> None:
    async with rig.db.unit_of_work() as uow:
        for n in range(3):
            await uow.publish(
                LeadCreatedV1(
                    lead_id="one-lead",
                    received_at=datetime.now(UTC),
                    lead=LeadProfile(email=f"v{n}@a.io"),
                ),
                topic=rig.topic,
                subject="one-lead",
            )
    assert await rig.relay.publish_pending() == 3
    assert await rig.relay.redrive(datetime.now(UTC) - timedelta(minutes=5)) == 3
    assert await rig.relay.publish_pending() == 3
    records = await read_topic(rig.infra.bootstrap, rig.topic, until=6)
    emails = [r.value.split(b'"email":"')[1].split(b'"')[0] for r in records if r.value]
    assert emails == [b"v0@a.io", b"v1@a.io", b"v2@a.io"] * 2


async def _eq(value: Any, expected: Any) -> bool:
    return (await value) == expected


async def _true_when(value: bool) -> bool:
    return value


def _duplicates(service: str, topic: str) -> float:
    from prometheus_client import REGISTRY

    return (
        REGISTRY.get_sample_value(
            "handoff_events_consumed_total",
            {"service": service, "topic": topic, "outcome": "duplicate"},
        )
        or 0.0
    )
