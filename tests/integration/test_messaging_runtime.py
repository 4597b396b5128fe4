"""The reliable-messaging runtime on the real embedded PostgreSQL and broker: idempotent
consumption, crash recovery, dead-lettering, and the outbox relay's ordering guarantees."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from support.events import scored_lead
from support.infra import Infra
from support.kafka import produce, read_topic
from support.waiting import wait_for

from handoff_runtime.consumer import Consumer, ConsumerLoop, ConsumerSettings
from handoff_runtime.db import Database, UnitOfWork
from handoff_runtime.kafka import ensure_topics, make_consumer, make_producer
from handoff_runtime.metrics import EVENTS_CONSUMED
from handoff_runtime.relay import OutboxRelay
from handoff_runtime.service import leave_group
from handoff_runtime.settings import ServiceSettings
from handoff_runtime.tracing import trace_id_of
from handoff_schemas import (
    CloudEvent,
    FitGrade,
    LeadCreatedV1,
    LeadNurtureRequestedV1,
    LeadProfile,
    LeadQueuedV1,
    LeadScoredV1,
    NurtureReason,
    RoutingDecision,
    Topic,
    decode,
    encode,
    new_event,
)
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

    def loop(
        self,
        *,
        group: str | None = None,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.01,
        max_records: int = 100,
        commit_interval_s: float = 0.0,
    ) -> ConsumerLoop:
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
            max_records=max_records,
        )
        return ConsumerLoop(
            consumer,
            kafka,
            self.db,
            ConsumerSettings(
                service=self.service,
                max_records=max_records,
                max_attempts=max_attempts,
                retry_backoff_s=retry_backoff_s,
                commit_timeout_s=5,
                commit_interval_s=commit_interval_s,
            ),
        )

    async def effect_count(self) -> int:
        async with self.db.engine.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(self.effects)) or 0)


def lead_event(email: str = "ada@acme.io", traceparent: str | None = None) -> CloudEvent[Any]:
    lead_id = uuid.uuid4().hex
    data = LeadCreatedV1(
        lead_id=lead_id, received_at=datetime.now(UTC), lead=LeadProfile(email=email)
    )
    return new_event(data, source="/tests", subject=lead_id, traceparent=traceparent)


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

    async def never_commit(partitions: Any = None) -> None:
        return None  # the process dies right after the DB commit, before the offset commit

    crashed.commit_applied = never_commit  # type: ignore[method-assign]
    await run_until(crashed, lambda: _eq(rig.effect_count(), 20))

    restarted = rig.loop()  # same group: nothing committed, so everything is re-delivered
    duplicates_before = _duplicates(rig.service, rig.topic)
    await run_until(
        restarted, lambda: _true_when(_duplicates(rig.service, rig.topic) - duplicates_before >= 20)
    )
    assert await rig.effect_count() == 20


async def test_a_busy_consumer_commits_offsets_once_an_interval_and_when_it_falls_idle(
    rig: Rig,
) -> None:
    """Batches that keep coming are committed to the group at most once per commit interval
    (here, never while busy); what was applied is committed once the consumer falls idle."""
    events = [lead_event() for _ in range(30)]
    await produce(rig.infra.bootstrap, rig.topic, [(e.subject.encode(), encode(e)) for e in events])
    loop = rig.loop(max_records=4, commit_interval_s=3600)
    commits: list[dict[TopicPartition, int]] = []
    batches = 0
    commit, process_batch = loop.kafka.commit, loop.process_batch

    async def counted_commit(offsets: Any = None) -> None:
        commits.append({tp: meta.offset for tp, meta in offsets.items()})
        await commit(offsets)

    async def counted_batch(records: Any) -> None:
        nonlocal batches
        batches += 1
        await process_batch(records)

    loop.kafka.commit = counted_commit
    loop.process_batch = counted_batch  # type: ignore[method-assign]
    partitions = [TopicPartition(rig.topic, p) for p in (0, 1)]

    async def all_committed() -> bool:
        if await rig.effect_count() < 30:
            return False
        return sum([await loop.kafka.committed(tp) or 0 for tp in partitions]) == 30

    await run_until(loop, all_committed)
    assert batches >= 8, batches  # 30 records, at most 4 a batch
    assert 1 <= len(commits) < batches / 2, (len(commits), batches)


def never_idle(loop: ConsumerLoop) -> None:
    """Make `loop` look busy forever once it has read everything: an empty fetch never
    returns, so the idle commit never runs and only a stop or a revoke can commit."""
    getmany = loop.kafka.getmany

    async def busy_getmany(*partitions: Any, **options: Any) -> Any:
        batches = await getmany(*partitions, **options)
        if not any(batches.values()):
            await asyncio.Event().wait()
        return batches

    loop.kafka.getmany = busy_getmany


def recorded_commits(loop: ConsumerLoop) -> list[dict[TopicPartition, int]]:
    """Every offset commit `loop` sends to its group, from now on."""
    commits: list[dict[TopicPartition, int]] = []
    commit = loop.kafka.commit

    async def recording_commit(offsets: Any = None) -> None:
        commits.append({tp: meta.offset for tp, meta in offsets.items()})
        await commit(offsets)

    loop.kafka.commit = recording_commit
    return commits


async def committed_offsets(rig: Rig, group: str) -> dict[int, int]:
    """The offsets `group` has committed on the rig's topic, read by a client of its own."""
    reader = make_consumer(
        rig.infra.bootstrap,
        group_id=group,
        client_id="offsets",
        fetch_max_wait_ms=50,
        max_records=1,
    )
    await reader.start()
    try:
        return {p: await reader.committed(TopicPartition(rig.topic, p)) or 0 for p in (0, 1)}
    finally:
        await reader.stop()


@asynccontextmanager
async def busy_consumer(
    rig: Rig,
) -> AsyncIterator[tuple[ConsumerLoop, list[dict[TopicPartition, int]]]]:
    """A consumer that has applied 12 records and committed none of them (its commit interval
    not reached, never idle), and every commit it sends from then on; cancelled on exit."""
    events = [lead_event() for _ in range(12)]
    await produce(rig.infra.bootstrap, rig.topic, [(e.subject.encode(), encode(e)) for e in events])
    loop = rig.loop(max_records=5, commit_interval_s=3600)
    never_idle(loop)
    commits = recorded_commits(loop)
    await loop.kafka.start()
    task = asyncio.create_task(loop.run())
    try:
        assert await wait_for(lambda: _eq(rig.effect_count(), 12), timeout_s=45)
        assert commits == []
        yield loop, commits
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_stopping_consumer_commits_what_it_applied_as_it_leaves(rig: Rig) -> None:
    """A busy consumer (commit interval not reached, never idle) that is stopped commits the
    offsets of every record it applied on its way out of the group, so a restart reads on
    from there instead of receiving them all again."""
    async with busy_consumer(rig) as (loop, commits):
        pass
    await leave_group(loop.kafka, loop)
    assert len(commits) == 1
    assert sum(commits[0].values()) == 12
    assert sum((await committed_offsets(rig, rig.service)).values()) == 12


async def test_a_consumer_giving_up_partitions_commits_what_it_applied_of_them(rig: Rig) -> None:
    """When a second member joins, the first gives up its partitions and commits what it
    applied of them before the newcomer takes them, although its commit interval has not
    passed and it never fell idle: the newcomer starts after those records."""
    second = rig.loop(max_records=5)
    async with busy_consumer(rig) as (first, commits):
        try:
            await second.kafka.start()
            second.kafka.subscribe([rig.topic])
            await second.kafka.getmany(timeout_ms=100)  # joins the group
            joined = await wait_for(lambda: _true_when(bool(second.kafka.assignment())), 45)
            assert joined
            assert sum(sum(c.values()) for c in commits) == 12, commits
            applied_by_second: list[Any] = []
            for _ in range(5):
                batches = await second.kafka.getmany(timeout_ms=200)
                applied_by_second += [r for records in batches.values() for r in records]
            assert applied_by_second == []
        finally:
            await second.kafka.stop()
    await first.kafka.stop()


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


# The service defaults: every service retries a failing record this often, this fast.
MAX_ATTEMPTS: int = ServiceSettings.model_fields["max_attempts"].default
RETRY_BACKOFF_S: float = ServiceSettings.model_fields["retry_backoff_ms"].default / 1000
NEXT_MESSAGE_WITHIN_S = 10
"""How soon after a poison message the next message of its partition must be processed."""


def _envelope(**fields: Any) -> bytes:
    """A structurally valid CloudEvents envelope, changed by `fields`."""
    lead_id = uuid.uuid4().hex
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/tests",
        "type": "handoff.lead.created.v1",
        "subject": lead_id,
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "data": {
            "lead_id": lead_id,
            "received_at": datetime.now(UTC).isoformat(),
            "lead": {"email": "ada@acme.io"},
        },
        **fields,
    }
    return json.dumps(envelope).encode()


@dataclass(frozen=True)
class Poison:
    """A record no consumer can apply, and what its dead-letter record must say why."""

    value: Callable[[], bytes]
    cause: str


POISONS = {
    "malformed-bytes": Poison(lambda: b"\xff\x00not json", "not a CloudEvents envelope"),
    "json-that-is-not-an-envelope": Poison(
        lambda: json.dumps({"lead_id": "L-1", "email": "ada@acme.io"}).encode(),
        "not a CloudEvents envelope: id: Field required",
    ),
    "envelope-whose-data-misses-fields": Poison(
        lambda: _envelope(data={"lead_id": "L-2", "received_at": datetime.now(UTC).isoformat()}),
        "invalid handoff.lead.created.v1 data: lead: Field required",
    ),
    "unknown-event-version": Poison(
        lambda: _envelope(type="handoff.lead.created.v9"),
        "unknown event type 'handoff.lead.created.v9'",
    ),
    "valid-event-its-handler-cannot-apply": Poison(
        lambda: encode(lead_event(email="poison@acme.io")), "Boom: cannot process"
    ),
}


@asynccontextmanager
async def consuming(loop: ConsumerLoop, relay: OutboxRelay) -> AsyncIterator[None]:
    """Run a consumer loop (admitted to its group before this yields) and an outbox relay."""
    await loop.kafka.start()
    tasks = [asyncio.create_task(loop.run()), asyncio.create_task(relay.run())]
    try:
        async with asyncio.timeout(30):
            while not loop.joined:
                assert not tasks[0].done(), tasks[0].exception()
                await asyncio.sleep(0.05)
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await loop.kafka.stop()


async def applied_leads(rig: Rig) -> list[str]:
    async with rig.db.engine.connect() as conn:
        return list((await conn.execute(sa.select(rig.effects.c.lead_id))).scalars())


@pytest.mark.parametrize("poison", POISONS.values(), ids=POISONS.keys())
async def test_a_poison_message_is_dead_lettered_and_the_next_one_on_its_partition_is_processed(
    rig: Rig, poison: Poison
) -> None:
    """The loop retries every failure alike, `MAX_ATTEMPTS` times with backoff, even a
    record that cannot be decoded and so could never succeed; then the record goes, as
    received and with its own headers, to the dead-letter topic, and the valid message
    produced right after it on the same partition is processed within 10 s."""
    loop = rig.loop(max_attempts=MAX_ATTEMPTS, retry_backoff_s=RETRY_BACKOFF_S)
    key = f"lead-{uuid.uuid4().hex[:8]}".encode()
    value = poison.value()
    good = lead_event()
    async with consuming(loop, rig.relay):
        bad = await rig.producer.send_and_wait(
            rig.topic, value=value, key=key, headers=[("x-sync-run", b"crm-nightly-42")]
        )
        produced = time.monotonic()
        after = await rig.producer.send_and_wait(rig.topic, value=encode(good), key=key)
        applied = await wait_for(lambda: applied_leads(rig), timeout_s=2 * NEXT_MESSAGE_WITHIN_S)
        latency = time.monotonic() - produced
        dead = await read_topic(
            rig.infra.bootstrap,
            dead_letter_topic(rig.service).name,
            until=1,
            where=lambda r: r.key == key,
        )

    assert after.partition == bad.partition
    assert after.offset > bad.offset
    assert applied == [good.data.lead_id]
    assert latency < NEXT_MESSAGE_WITHIN_S, f"the next message took {latency:.1f} s"
    assert len(dead) == 1
    assert dead[0].value == value
    headers = {k: v.decode() for k, v in dead[0].headers}
    assert headers == {
        "x-sync-run": "crm-nightly-42",
        "dlq_original_topic": rig.topic,
        "dlq_original_partition": str(bad.partition),
        "dlq_original_offset": str(bad.offset),
        "dlq_error": headers["dlq_error"],
        "dlq_attempts": str(MAX_ATTEMPTS),
        "dlq_consumer_group": rig.service,
    }
    assert poison.cause in headers["dlq_error"]
    async with rig.db.engine.connect() as conn:
        outcomes = (
            await conn.execute(
                sa.select(rig.db.tables.processed_events.c.outcome).where(
                    rig.db.tables.processed_events.c.offset == bad.offset,
                    rig.db.tables.processed_events.c.partition == bad.partition,
                )
            )
        ).scalars()
        assert list(outcomes) == ["dead_lettered"]


async def test_poison_messages_in_a_row_hold_their_partition_up_for_seconds_at_most(
    rig: Rig,
) -> None:
    """Every kind of poison back to back on one partition: each is dead-lettered in order
    after its retries, and the valid message behind them all is still processed within
    10 s of being produced."""
    loop = rig.loop(max_attempts=MAX_ATTEMPTS, retry_backoff_s=RETRY_BACKOFF_S)
    key = b"same-lead"
    values = [poison.value() for poison in POISONS.values()]
    good = lead_event()
    async with consuming(loop, rig.relay):
        for value in values:
            await rig.producer.send(rig.topic, value=value, key=key)
        produced = time.monotonic()
        await rig.producer.send_and_wait(rig.topic, value=encode(good), key=key)
        applied = await wait_for(lambda: applied_leads(rig), timeout_s=2 * NEXT_MESSAGE_WITHIN_S)
        latency = time.monotonic() - produced
        dead = await read_topic(
            rig.infra.bootstrap,
            dead_letter_topic(rig.service).name,
            until=len(values),
            where=lambda r: r.key == key,
        )

    assert applied == [good.data.lead_id]
    assert latency < NEXT_MESSAGE_WITHIN_S, f"the next message took {latency:.1f} s"
    assert [r.value for r in dead] == values
    errors = [dict(r.headers)["dlq_error"].decode() for r in dead]
    assert all(
        poison.cause in error for poison, error in zip(POISONS.values(), errors, strict=True)
    )


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


async def test_work_undone_by_a_failed_batch_leaves_no_after_commit_callbacks_behind(
    rig: Rig,
) -> None:
    """A batch with a failing record is applied again record by record; what the first,
    rolled-back attempt registered to run after the commit (metrics) must not run twice."""
    announced: list[str] = []
    consumer = Consumer(group=rig.service)

    @consumer.handles(LeadCreatedV1)
    async def count_after_commit(uow: UnitOfWork, event: CloudEvent[Any]) -> None:
        uow.after_commit.append(lambda: announced.append(event.data.lead_id))
        if str(event.data.lead.email).startswith("poison"):
            raise Boom(f"cannot process {event.data.lead_id}")

    events = [lead_event(), lead_event("poison@acme.io"), lead_event()]

    await offline_loop(rig, consumer).process_batch(as_records(rig, events))

    assert sorted(announced) == sorted([events[0].data.lead_id, events[2].data.lead_id])
    counted = {
        outcome: EVENTS_CONSUMED.labels(rig.service, rig.topic, outcome)._value.get()
        for outcome in ("processed", "dead_lettered")
    }
    assert counted == {"processed": 2, "dead_lettered": 1}


def batch_loop(rig: Rig, calls: list[list[str]]) -> ConsumerLoop:
    """A loop whose only handler is set-based: it records the leads of each call, writes
    their effects in one statement, announces each lead, and fails on a poison lead."""
    consumer = Consumer(group=rig.service)

    @consumer.handles_batch(LeadCreatedV1)
    async def apply_all(uow: UnitOfWork, events: list[CloudEvent[Any]]) -> None:
        calls.append([event.data.lead_id for event in events])
        for event in events:
            await uow.publish(event.data, topic=rig.topic, subject=event.data.lead_id)
        await uow.session.execute(
            rig.effects.insert(),
            [{"event_id": event.id, "lead_id": event.data.lead_id} for event in events],
        )
        if any(str(event.data.lead.email).startswith("poison") for event in events):
            raise Boom("cannot process a poison lead")

    return offline_loop(rig, consumer)


def offline_loop(rig: Rig, consumer: Consumer) -> ConsumerLoop:
    """A loop on `rig`'s topic for calling `process_batch` directly (no broker)."""
    consumer.subscribe_to(rig.topic)
    return ConsumerLoop(
        consumer,
        None,  # process_batch never touches the broker
        rig.db,
        ConsumerSettings(
            service=rig.service,
            max_records=10,
            max_attempts=2,
            retry_backoff_s=0.01,
            commit_timeout_s=5,
        ),
    )


def as_records(rig: Rig, events: list[CloudEvent[Any]]) -> list[ConsumerRecord[bytes, bytes]]:
    return [
        ConsumerRecord(rig.topic, 0, offset, 0, 0, e.subject.encode(), encode(e), None, 0, 0, [])
        for offset, e in enumerate(events)
    ]


async def outbox_rows(rig: Rig) -> list[tuple[str, str | None]]:
    """(topic, key) of every outbox row, in the order the relay publishes them."""
    async with rig.db.engine.connect() as conn:
        table = rig.db.tables.outbox
        query = sa.select(table.c.topic, table.c.key).order_by(table.c.id)
        return [(row.topic, row.key) for row in await conn.execute(query)]


async def test_a_batch_handler_gets_a_batchs_fresh_events_in_one_call(rig: Rig) -> None:
    """Consecutive events for a set-based handler are handed over together, in order, a
    copy of an earlier event left out; their announcements reach the outbox in that order,
    each in the trace of the event about its lead."""
    calls: list[list[str]] = []
    traces = [f"{n:032x}" for n in (1, 2)]
    first, second, third = (
        lead_event(traceparent=f"00-{traces[0]}-{'1' * 16}-01"),
        lead_event(),
        lead_event(traceparent=f"00-{traces[1]}-{'2' * 16}-01"),
    )

    await batch_loop(rig, calls).process_batch(as_records(rig, [first, second, first, third]))

    leads = [first.data.lead_id, second.data.lead_id, third.data.lead_id]
    assert calls == [leads]
    assert sorted(await applied_leads(rig)) == sorted(leads)
    assert await outbox_rows(rig) == [(rig.topic, lead) for lead in leads]
    async with rig.db.engine.connect() as conn:
        table = rig.db.tables.outbox
        values = (await conn.execute(sa.select(table.c.value).order_by(table.c.id))).scalars()
        announced = [decode(value).traceparent for value in values]
    assert [trace_id_of(t) for t in announced] == [traces[0], None, traces[1]]
    counted = {
        outcome: EVENTS_CONSUMED.labels(rig.service, rig.topic, outcome)._value.get()
        for outcome in ("processed", "duplicate")
    }
    assert counted == {"processed": 3, "duplicate": 1}


async def test_a_failing_batch_handler_is_called_again_one_event_at_a_time(rig: Rig) -> None:
    """The set-based attempt fails as a whole and is rolled back with the events it staged;
    then each event gets a call of its own, the poison one is dead-lettered, and the others
    take effect and are announced once."""
    calls: list[list[str]] = []
    good, poison, other = lead_event(), lead_event("poison@acme.io"), lead_event()

    await batch_loop(rig, calls).process_batch(as_records(rig, [good, poison, other]))

    ids = [e.data.lead_id for e in (good, poison, other)]
    assert calls == [ids, [ids[0]], [ids[1]], [ids[1]], [ids[2]]]
    assert sorted(await applied_leads(rig)) == sorted([ids[0], ids[2]])
    # in order: the first lead's announcement, the poison record for the dead-letter
    # topic, the last lead's announcement; nothing from the rolled-back attempt
    dlq = dead_letter_topic(rig.service).name
    assert await outbox_rows(rig) == [(rig.topic, ids[0]), (dlq, ids[1]), (rig.topic, ids[2])]


async def test_a_batch_handler_of_several_types_gets_them_together_past_ignored_events(
    rig: Rig,
) -> None:
    """Events for one batch handler stay in one call whatever their types, and an event the
    group ignores (no handler) does not split them; an event for another handler does, so
    the order of effects is kept."""
    calls: list[tuple[str, list[str]]] = []
    consumer = Consumer(group=rig.service)

    @consumer.handles_batch(LeadCreatedV1, LeadScoredV1)
    async def seen(uow: UnitOfWork, events: list[CloudEvent[Any]]) -> None:
        calls.append(("seen", [event.type.split(".")[2] for event in events]))

    @consumer.handles(LeadQueuedV1)
    async def queued(uow: UnitOfWork, event: CloudEvent[Any]) -> None:
        calls.append(("queued", [event.type.split(".")[2]]))

    now = datetime.now(UTC)
    decision = RoutingDecision(rule="r", team_id="t", icp_version=1, score=80, grade=FitGrade.A)

    def wrapped(data: Any) -> CloudEvent[Any]:
        return new_event(data, source="/tests", subject=data.lead_id)

    batch = [
        lead_event(),
        wrapped(scored_lead("b", at=now)),
        wrapped(
            LeadNurtureRequestedV1(
                lead_id="n", reason=NurtureReason.LOW_FIT, requested_at=now, requested_by="router"
            )
        ),
        lead_event(),
        wrapped(LeadQueuedV1(lead_id="q", team_id="t", queued_at=now, decision=decision)),
        wrapped(scored_lead("d", at=now)),
    ]
    await offline_loop(rig, consumer).process_batch(as_records(rig, batch))

    assert calls == [
        ("seen", ["created", "scored", "created"]),
        ("queued", ["queued"]),
        ("seen", ["scored"]),
    ]
    counted = {
        outcome: EVENTS_CONSUMED.labels(rig.service, rig.topic, outcome)._value.get()
        for outcome in ("processed", "ignored")
    }
    assert counted == {"processed": 5, "ignored": 1}
