"""The idempotent, batched consumer loop every service uses.

A consumer is declared in a few lines: the service names its group and registers one
handler per event payload type; the topics to subscribe to come from the catalogue.
For each batch the loop opens one transaction and records every event key in
`processed_events` in it (so a duplicate delivery is acknowledged and skipped). If the batch
fails, it is applied again record by record in a new transaction, each record in a savepoint
of its own: a failing record is retried with backoff a bounded number of times and then
staged for the dead-letter topic through the outbox. Offsets are committed only after the
database commit (while batches keep coming, at most once per commit interval, a second by
default, since each commit is a broker request of its own). A crash anywhere in between
re-delivers records whose effects are either absent (rolled back) or recorded (skipped):
never lost, never doubled.

A handler takes one event (`Consumer.handles`) or, to apply a batch set-based, a list of them
(`Consumer.handles_batch`, for one payload type or several): consecutive events that go to the
same batch handler are handed over together, in order, so a set-based handler writes each
table once per batch instead of once per event (a handler taking every type one topic carries
is not cut short each time the type changes). After a failure the batch is applied again
record by record, and a batch handler then gets lists of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from pydantic import BaseModel
from sqlalchemy.dialects.postgresql import insert
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential

from handoff_schemas import CloudEvent, InvalidEvent, decode
from handoff_schemas.catalogue import dead_letter_topic, event_type_of
from handoff_schemas.envelope import RawCloudEvent

from . import crashpoints
from .aio import within
from .db import Database, UnitOfWork
from .metrics import (
    BATCH_PROCESSING,
    CONSUMER_LAG,
    DEAD_LETTERED,
    EVENT_PROCESSING,
    EVENTS_CONSUMED,
)
from .tracing import bind_trace, trace_id_of

log = structlog.get_logger(__name__)

PayloadT = TypeVar("PayloadT", bound=BaseModel)
Handler = Callable[[UnitOfWork, CloudEvent[Any]], Awaitable[None]]
BatchHandler = Callable[[UnitOfWork, list[CloudEvent[Any]]], Awaitable[None]]


@dataclass
class Consumer:
    """A service's consumer group and its handlers, keyed by event type."""

    group: str
    handlers: dict[str, Handler] = field(default_factory=dict)
    batch_handlers: dict[str, BatchHandler] = field(default_factory=dict)
    topics: set[str] = field(default_factory=set)

    def handles(
        self, payload: type[PayloadT]
    ) -> Callable[
        [Callable[[UnitOfWork, CloudEvent[PayloadT]], Awaitable[None]]],
        Callable[[UnitOfWork, CloudEvent[PayloadT]], Awaitable[None]],
    ]:
        """Register a handler for events whose data is `payload` (on every topic carrying it)."""
        entry = event_type_of(payload)

        def register(
            fn: Callable[[UnitOfWork, CloudEvent[PayloadT]], Awaitable[None]],
        ) -> Callable[[UnitOfWork, CloudEvent[PayloadT]], Awaitable[None]]:
            self.handlers[entry.type] = fn
            self.topics.update(entry.topics)
            return fn

        return register

    def handles_batch(self, *payloads: type[BaseModel]) -> Callable[[BatchHandler], BatchHandler]:
        """Register a set-based handler for events whose data is one of `payloads`: it gets the
        consecutive events of those types in a batch, in order, and must apply each of them
        exactly as one at a time would (it is also called with lists of one)."""
        entries = [event_type_of(payload) for payload in payloads]

        def register(fn: BatchHandler) -> BatchHandler:
            for entry in entries:
                self.batch_handlers[entry.type] = fn
                self.topics.update(entry.topics)
            return fn

        return register

    def subscribe_to(self, *topics: str) -> None:
        """Limit or extend the subscribed topics (a type may travel on several)."""
        self.topics = set(topics)


@dataclass
class ConsumerSettings:
    """How the loop batches, retries and waits."""

    service: str
    max_records: int
    max_attempts: int
    retry_backoff_s: float
    commit_timeout_s: float
    commit_interval_s: float = 0.0
    """Offsets are committed at most this often while batches keep coming (and at once
    when the consumer falls idle, gives up partitions or stops)."""


class ConsumerLoop:
    """Runs one `Consumer` against the broker and the service's database."""

    def __init__(
        self,
        consumer: Consumer,
        kafka: AIOKafkaConsumer,
        db: Database,
        settings: ConsumerSettings,
        *,
        from_beginning: bool = False,
    ) -> None:
        self.spec = consumer
        self.kafka = kafka
        self.db = db
        self.settings = settings
        self.dlq_topic = dead_letter_topic(settings.service).name
        self.joined = False
        self._measured: set[TopicPartition] = set()
        self._observed: dict[tuple[str, str], tuple[Any, Any]] = {}
        # The next offset of each partition whose records are applied (their transaction
        # committed) but not yet committed to the group, and when the group last took some.
        self._applied: dict[TopicPartition, OffsetAndMetadata] = {}
        self._last_commit = time.monotonic()
        # After the broker lost its log, committed offsets on the new one cannot be trusted
        # (a member that had not noticed yet may have committed positions carried over from
        # the old log, past records it never read), so each partition is read from its start
        # the first time this member owns it; the processed-events marks skip the repeats.
        self.from_beginning = from_beginning
        self._rewound: set[TopicPartition] = set()
        # One statement text whatever the batch size (arrays, not a VALUES list per size), so
        # the driver prepares it once.
        self._claim_statement = (
            f'INSERT INTO "{db.tables.schema}".processed_events'
            ' (event_key, topic, partition, "offset", outcome)'
            " SELECT key, topic, partition, position, 'processed' FROM unnest("
            " $1::text[], $2::text[], $3::int4[], $4::int8[]"
            " ) AS claimed(key, topic, partition, position)"
            " ON CONFLICT (event_key) DO NOTHING RETURNING event_key"
        )

    async def run(self) -> None:
        """Consume until cancelled. A failed batch is rolled back and consumed again."""
        self.kafka.subscribe(sorted(self.spec.topics), listener=_JoinListener(self))
        while True:
            batches = await self.kafka.getmany(
                timeout_ms=1000, max_records=self.settings.max_records
            )
            self._measure_lag(batches)
            records = [r for recs in batches.values() for r in recs]
            if not records:
                await self.commit_applied()
                continue
            try:
                await self.process_batch(records)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("batch failed; it will be consumed again", records=len(records))
                for tp, recs in batches.items():
                    self.kafka.seek(tp, recs[0].offset)
                await asyncio.sleep(self.settings.retry_backoff_s * 4)
                continue
            crashpoints.reached("after_process")
            self._applied.update(
                {tp: OffsetAndMetadata(recs[-1].offset + 1, "") for tp, recs in batches.items()}
            )
            if time.monotonic() - self._last_commit >= self.settings.commit_interval_s:
                await self.commit_applied()

    def _measure_lag(self, batches: dict[TopicPartition, list[Any]]) -> None:
        """Set the lag gauge of each partition in this fetch: records after its last one.
        Nothing here awaits, so a cancelled loop never swallows its cancellation."""
        for tp, records in batches.items():
            end = self.kafka.highwater(tp)
            if end is None or not records:
                continue
            CONSUMER_LAG.labels(self.settings.service, self.spec.group, tp.topic, tp.partition).set(
                max(0, end - (records[-1].offset + 1))
            )
            self._measured.add(tp)

    def forget_all_lag(self) -> None:
        """Drop the lag series of every partition this member owned (it is leaving)."""
        self.forget_lag(set(self._measured))

    def forget_lag(self, partitions: set[TopicPartition]) -> None:
        """Drop the lag series of partitions this member no longer owns."""
        for tp in partitions:
            self._measured.discard(tp)
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(self.settings.service, self.spec.group, tp.topic, tp.partition)

    async def process_batch(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Apply a batch in one transaction: each record once, failures dead-lettered.

        The common case costs one transaction and one set-based insert of the processed marks
        for the whole batch. If anything in it fails (its commit included), that transaction
        is rolled back and the batch is applied again record by record in another, each
        record in a savepoint of its own with bounded retries, so a bad record is
        dead-lettered without holding back the others."""
        started = time.perf_counter()
        try:
            async with self.db.unit_of_work() as uow:
                await self._apply_batch(uow, records)
        except Exception as exc:
            log.info(
                "batch applied record by record after a failure",
                records=len(records),
                error=f"{type(exc).__name__}: {exc}"[:500],
            )
            async with self.db.unit_of_work() as uow:
                halfway = len(records) // 2
                for index, record in enumerate(records):
                    if index == halfway and index > 0:
                        crashpoints.reached("mid_batch")
                    await self._process_record(uow, record)
        BATCH_PROCESSING.labels(self.settings.service).observe(time.perf_counter() - started)

    async def _apply_batch(
        self, uow: UnitOfWork, records: list[ConsumerRecord[bytes, bytes]]
    ) -> None:
        """Mark every record's event processed in one statement, then apply the ones that
        were not already (a copy of an event later in the same batch is a duplicate).
        Consecutive events for one batch handler are applied together. A record that does
        not decode fails the fast path: record by record, it is dead-lettered."""
        events = [decode(record.value) for record in records]
        keyed = [
            (record, event.id, event.traceparent)
            for record, event in zip(records, events, strict=True)
        ]
        fresh = await self._claim(uow, keyed)
        run = _Run()
        halfway = len(records) // 2
        for index, ((record, key, traceparent), event) in enumerate(
            zip(keyed, events, strict=True)
        ):
            if index == halfway and index > 0 and crashpoints.is_armed("mid_batch"):
                await self._apply_run(uow, run)  # the first half, applied before the crash
                crashpoints.reached("mid_batch")
            dedupe_key = self.dedupe_key(key)
            if dedupe_key not in fresh:
                self._observe(uow, record, key, traceparent, "duplicate", time.perf_counter())
                continue
            fresh.discard(dedupe_key)
            if (handler := self.spec.batch_handlers.get(event.type)) is not None:
                if run.events and self.spec.batch_handlers[run.events[0].type] is not handler:
                    await self._apply_run(uow, run)
                run.add(record, key, traceparent, event)
                continue
            if event.type not in self.spec.handlers:
                # A valid event this group does not act on: nothing is applied, so the events
                # on either side of it may still go to their batch handler together.
                self._observe(uow, record, key, traceparent, "ignored", time.perf_counter())
                continue
            await self._apply_run(uow, run)
            started = time.perf_counter()
            with _record_context(record, key, traceparent):
                outcome = await self._dispatch(uow, event)
                self._observe(uow, record, key, traceparent, outcome, started)
        await self._apply_run(uow, run)

    async def _apply_run(self, uow: UnitOfWork, run: _Run) -> None:
        """Hand consecutive events of one batch handler to it, and empty `run`."""
        if not run.events:
            return
        started = time.perf_counter()
        uow.traces = {
            event.subject: trace_id
            for event in run.events
            if (trace_id := trace_id_of(event.traceparent)) is not None
        }
        try:
            await self.spec.batch_handlers[run.events[0].type](uow, run.events)
        finally:
            uow.traces = {}
        for record, key, traceparent in run.records:
            self._observe(uow, record, key, traceparent, "processed", started)
        run.clear()

    async def _claim(
        self, uow: UnitOfWork, keyed: list[tuple[ConsumerRecord[bytes, bytes], str, str | None]]
    ) -> set[str]:
        """Insert the processed marks of a batch; the dedupe keys that were new."""
        rows: dict[str, ConsumerRecord[bytes, bytes]] = {}
        for record, key, _ in keyed:
            rows.setdefault(self.dedupe_key(key), record)
        driver = await uow.driver()
        inserted = await driver.fetch(
            self._claim_statement,
            list(rows),
            [record.topic for record in rows.values()],
            [record.partition for record in rows.values()],
            [record.offset for record in rows.values()],
        )
        return {row[0] for row in inserted}

    async def _process_record(self, uow: UnitOfWork, record: ConsumerRecord[bytes, bytes]) -> None:
        started = time.perf_counter()
        key, traceparent = _event_key(record.value)
        with _record_context(record, key, traceparent):
            outcome = "dead_lettered"
            error: BaseException | None = None
            attempts = 0
            try:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self.settings.max_attempts),
                    wait=wait_exponential(multiplier=self.settings.retry_backoff_s, max=5),
                    reraise=True,
                ):
                    with attempt:
                        attempts = attempt.retry_state.attempt_number
                        async with uow.savepoint():
                            outcome = await self._apply(uow, record, key)
            except Exception as exc:  # bounded retries are spent: dead-letter it
                error = exc
            if error is not None:
                await self._dead_letter(uow, record, key, error, attempts)
                outcome = "dead_lettered"
            self._observe(uow, record, key, traceparent, outcome, started)

    def _observe(
        self,
        uow: UnitOfWork,
        record: ConsumerRecord[bytes, bytes],
        key: str,
        traceparent: str | None,
        outcome: str,
        started: float,
    ) -> None:
        """Count and log a record once its batch commits: a batch rolled back (or a fast
        path rolled back to be applied record by record) counts nothing twice. The line names
        the event, lead and trace itself (no context to bind and unbind per record)."""
        seconds = time.perf_counter() - started
        counted, timed = self._series(record.topic, outcome)
        fields = {
            "event_id": key,
            "lead_id": record.key.decode(errors="replace") if record.key else None,
            "trace_id": trace_id_of(traceparent),
            "group": self.spec.group,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "outcome": outcome,
        }

        def observe() -> None:
            counted.inc()
            timed.observe(seconds)
            log.info("event consumed", **fields)

        uow.after_commit.append(observe)

    def _series(self, topic: str, outcome: str) -> tuple[Any, Any]:
        """The consumed-records counter and processing-time histogram of a topic and outcome
        (looked up once per loop, not per record)."""
        series = self._observed.get((topic, outcome))
        if series is None:
            service = self.settings.service
            series = (
                EVENTS_CONSUMED.labels(service, topic, outcome),
                EVENT_PROCESSING.labels(service, topic),
            )
            self._observed[topic, outcome] = series
        return series

    async def _apply(self, uow: UnitOfWork, record: ConsumerRecord[bytes, bytes], key: str) -> str:
        if not await self._record_processed(uow, record, key, "processed"):
            return "duplicate"
        return await self._handle(uow, record)

    async def _handle(self, uow: UnitOfWork, record: ConsumerRecord[bytes, bytes]) -> str:
        return await self._dispatch(uow, decode(record.value))

    async def _dispatch(self, uow: UnitOfWork, event: CloudEvent[Any]) -> str:
        if (batch_handler := self.spec.batch_handlers.get(event.type)) is not None:
            await batch_handler(uow, [event])
            return "processed"
        handler = self.spec.handlers.get(event.type)
        if handler is None:
            return "ignored"  # a valid event this service does not act on
        await handler(uow, event)
        return "processed"

    def dedupe_key(self, event_key: str) -> str:
        """The key marking an event as processed by this group: the event key itself for the
        service's own group, prefixed with the group's name for any other group of the
        service (e.g. a read model's), so that each group applies every event once."""
        if self.spec.group == self.settings.service:
            return event_key
        return f"{self.spec.group}:{event_key}"

    async def _record_processed(
        self, uow: UnitOfWork, record: ConsumerRecord[bytes, bytes], key: str, outcome: str
    ) -> bool:
        table = uow.tables.processed_events
        inserted = await uow.session.execute(
            insert(table)
            .values(
                event_key=self.dedupe_key(key),
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                outcome=outcome,
            )
            .on_conflict_do_nothing(index_elements=[table.c.event_key])
            .returning(table.c.event_key)
        )
        return inserted.first() is not None

    async def _dead_letter(
        self,
        uow: UnitOfWork,
        record: ConsumerRecord[bytes, bytes],
        key: str,
        error: BaseException,
        attempts: int,
    ) -> None:
        reason = (
            str(error) if isinstance(error, InvalidEvent) else f"{type(error).__name__}: {error}"
        )
        log.warning(
            "dead-lettering message", topic=record.topic, offset=record.offset, error=reason
        )
        async with uow.savepoint():
            if not await self._record_processed(uow, record, key, "dead_lettered"):
                return
            original = {k: v.decode(errors="replace") for k, v in (record.headers or ())}
            uow.stage_record(
                topic=self.dlq_topic,
                key=record.key.decode(errors="replace") if record.key else None,
                value=record.value,
                headers={
                    **original,
                    "dlq_original_topic": record.topic,
                    "dlq_original_partition": str(record.partition),
                    "dlq_original_offset": str(record.offset),
                    "dlq_error": reason[:1000],
                    "dlq_attempts": str(attempts),
                    "dlq_consumer_group": self.spec.group,
                },
                event_id=None,
            )
        DEAD_LETTERED.labels(self.settings.service, record.topic).inc()

    async def commit_applied(self, partitions: set[TopicPartition] | None = None) -> None:
        """Commit the offsets of the records applied so far (of `partitions` only, if given).
        A failed commit is only logged: the effects are committed and recorded, so records
        delivered again are skipped."""
        if partitions is None:
            offsets, self._applied = self._applied, {}
            self._last_commit = time.monotonic()
        else:
            offsets = {tp: self._applied.pop(tp) for tp in partitions if tp in self._applied}
        if not offsets:
            return
        try:
            await within(self.kafka.commit(offsets), self.settings.commit_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("offset commit failed; records may be re-delivered", error=repr(exc))


@dataclass
class _Run:
    """Consecutive fresh events of a batch for one batch handler, waiting for it."""

    records: list[tuple[ConsumerRecord[bytes, bytes], str, str | None]] = field(
        default_factory=list
    )
    events: list[CloudEvent[Any]] = field(default_factory=list)

    def add(
        self,
        record: ConsumerRecord[bytes, bytes],
        key: str,
        traceparent: str | None,
        event: CloudEvent[Any],
    ) -> None:
        self.records.append((record, key, traceparent))
        self.events.append(event)

    def clear(self) -> None:
        self.records.clear()
        self.events.clear()


class _JoinListener(ConsumerRebalanceListener):
    """Marks the loop as joined once the group gave it an assignment (even an empty one)."""

    def __init__(self, loop: ConsumerLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit what was applied of the partitions before another member takes them; their
        lag is that member's to report now."""
        await self.loop.commit_applied(revoked)
        self.loop.forget_lag(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """The group has admitted this member."""
        if self.loop.from_beginning and (new := assigned - self.loop._rewound):
            # Offset 0, not seek_to_beginning(): the embedded broker's offset listing is
            # unreliable (see DESIGN.md), and on a broker that deleted old records offset 0
            # is out of range and resets to the earliest, which is the same place.
            for tp in new:
                self.loop.kafka.seek(tp, 0)
            self.loop._rewound |= new
        self.loop.joined = True
        log.info("consumer group joined", group=self.loop.spec.group, partitions=len(assigned))


@contextlib.contextmanager
def _record_context(
    record: ConsumerRecord[bytes, bytes], key: str, traceparent: str | None
) -> Iterator[None]:
    """Bind the event id, lead id and trace to the logs written while a record is applied."""
    structlog.contextvars.bind_contextvars(
        event_id=key, lead_id=record.key.decode(errors="replace") if record.key else None
    )
    bind_trace(traceparent)
    try:
        yield
    finally:
        structlog.contextvars.unbind_contextvars("event_id", "lead_id", "trace_id")


def _event_key(value: bytes | None) -> tuple[str, str | None]:
    """The dedupe key — the CloudEvents id when the envelope parses, else a content hash —
    and the event's traceparent, if any."""
    if value:
        try:
            raw = RawCloudEvent.model_validate_json(value)
            return raw.id, raw.traceparent
        except ValueError:
            pass
    return "sha256:" + hashlib.sha256(value or b"").hexdigest(), None
