"""Rebuilding the KPI read model from the topics: `python -m handoff_feedback rebuild-kpis`.

The read model is fed by feedback's consumer in the transaction that applies each batch to
the lifecycle. To rebuild it (after a change to how facts are read from events, or to repair
it), one transaction empties it and merges the facts of every event the topics still hold,
up to the end each partition had once the rebuild started.

It may run while feedback runs. The transaction first locks the read model's tables against
writes (readers go on seeing the old figures until it commits); a consumed batch that
already wrote to them commits first, and one that has not waits at its merge until the
rebuild commits. So every batch committed before the lock is in the topics below the ends
read after it, and is merged again; every batch after it merges on top of the rebuilt rows.
An event merged by both changes nothing the second time (merging is idempotent as well as
order-insensitive). While the rebuild runs, feedback's consumer waits; stopping feedback
first avoids that.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from handoff_runtime.aio import within
from handoff_runtime.db import Database, UnitOfWork
from handoff_runtime.kafka import close_quietly
from handoff_schemas import CloudEvent, InvalidEvent, decode

from .consumers import FEEDBACK_TOPICS
from .kpis import FACTS, project
from .settings import FeedbackSettings

log = structlog.get_logger(__name__)

CHUNK = 1000
"""Records fetched and merged at a time."""


@dataclass(frozen=True)
class Rebuilt:
    """What a rebuild read and what the read model holds after it."""

    records: int
    merged: int
    unreadable: int
    leads: int
    outcomes: int


async def rebuild_kpis(settings: FeedbackSettings, *, chunk: int = CHUNK) -> Rebuilt:
    """Empty the KPI read model and merge into it every event the topics hold, in one
    transaction; returns what it read and what the model holds."""
    db = Database(settings.database_url, schema="feedback", source="/handoff/feedback")
    kafka = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="handoff-feedback-kpi-rebuild",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        max_poll_records=chunk,
    )
    timeout_s = settings.kafka_timeout_s
    await within(kafka.start(), timeout_s + 10)
    try:
        async with db.unit_of_work() as uow:
            tables = ", ".join(f"feedback.{name}" for name in ("kpi_leads", "kpi_outcomes"))
            # Writers wait, readers do not (SHARE ROW EXCLUSIVE conflicts with the row
            # locks an upsert takes, not with reads).
            await uow.session.execute(sa.text(f"LOCK TABLE {tables} IN SHARE ROW EXCLUSIVE MODE"))
            await uow.session.execute(sa.text("DELETE FROM feedback.kpi_outcomes"))
            await uow.session.execute(sa.text("DELETE FROM feedback.kpi_leads"))
            counts = await _merge_topics(uow, kafka, chunk=chunk, timeout_s=timeout_s)
            leads = await uow.session.scalar(sa.text("SELECT count(*) FROM feedback.kpi_leads"))
            outcomes = await uow.session.scalar(
                sa.text("SELECT count(*) FROM feedback.kpi_outcomes")
            )
    finally:
        await close_quietly(kafka.stop(), timeout_s=timeout_s + 10, what="KPI rebuild reader")
        await db.dispose()
    rebuilt = Rebuilt(*counts, leads=leads or 0, outcomes=outcomes or 0)
    log.info("KPI read model rebuilt", **rebuilt.__dict__)
    return rebuilt


async def _merge_topics(
    uow: UnitOfWork, kafka: AIOKafkaConsumer, *, chunk: int, timeout_s: float
) -> tuple[int, int, int]:
    """Read every partition of feedback's topics from its start to the end it had when first
    fetched (after the lock), merging the facts of each chunk; returns the records read,
    the events merged and the records that were not valid events."""
    await within(kafka.topics(), timeout_s)  # loads the cluster's metadata
    partitions = [
        TopicPartition(topic, partition)
        for topic in FEEDBACK_TOPICS
        for partition in sorted(kafka.partitions_for_topic(topic) or ())
    ]
    kafka.assign(partitions)
    for tp in partitions:
        # Offset 0, not seek_to_beginning() (see DESIGN.md); where retention deleted the
        # start, the reset to the earliest lands on the first record still held.
        kafka.seek(tp, 0)
    ends: dict[TopicPartition, int] = {}
    following: dict[TopicPartition, int] = dict.fromkeys(partitions, 0)
    records = merged = unreadable = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pending := [tp for tp in partitions if tp not in ends or following[tp] < ends[tp]]:
        fetched = await kafka.getmany(*pending, timeout_ms=1000, max_records=chunk)
        events: list[CloudEvent[Any]] = []
        for tp in pending:
            if tp not in ends and (highwater := kafka.highwater(tp)) is not None:
                ends[tp] = highwater
            end = ends.get(tp)
            for record in fetched.get(tp, []):
                if end is not None and record.offset >= end:
                    break
                following[tp] = record.offset + 1
                records += 1
                try:
                    event = decode(record.value or b"")
                except InvalidEvent:
                    unreadable += 1
                    continue
                if type(event.data) in FACTS:
                    events.append(event)
        if fetched:
            deadline = loop.time() + timeout_s
        elif loop.time() > deadline:
            raise TimeoutError(
                f"no records from the broker for {timeout_s} s; still to read: "
                + ", ".join(f"{tp.topic}[{tp.partition}]" for tp in pending)
            )
        if events:
            await project(uow, events)
            merged += len(events)
    return records, merged, unreadable
